"""The HTML report of a run (`WORKSPACE/report.html`) and the comparison of several runs.

html.py builds them from results.json alone: one self-contained file (plotly's JavaScript inlined,
nothing fetched), written after every optimize run and by `nav-orch report`. plotly is imported
only while a report is written.
"""
