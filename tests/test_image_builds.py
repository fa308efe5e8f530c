"""Image builds through the Docker API leave no untagged images and skip unchanged targets: the
digest of a target's build inputs, the skip decision and the clean-up against a fake Docker
client, then one tiny two-stage build against the real daemon (marked `docker`)."""
from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import docker.errors
import pytest

from orchestrator.containers import engine, image_builds, images
from orchestrator.containers.bake import BakeTarget, load_bake_file
from orchestrator.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
TWO_STAGES = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
ARG TOKEN
COPY .build-extras/ /tmp/extras/
RUN echo "$TOKEN" > /message
FROM ${BASE_IMAGE}
COPY --from=build /message /message
"""


def conflict(image_id: str) -> docker.errors.APIError:
    response = SimpleNamespace(status_code=409, reason="Conflict", url=f"http://docker/images/{image_id}")
    return docker.errors.APIError("conflict", response=response,
                                  explanation=f"unable to delete {image_id[:19]}: image has dependent child images")


class FakeDocker:
    """The part of docker.DockerClient that builds use (`images.get`, `api.build`,
    `api.inspect_image`, `api.remove_image`), over a dict of images. Each build makes a stage
    image and a final one, or reports the stage IDs it is given."""

    def __init__(self, store: dict[str, dict]):
        self.store = store  # id -> {"tags": [...], "labels": {...}}
        self.images = self.api = self
        self.builds: list[dict] = []
        self.in_use: set[str] = set()  # what Docker refuses to remove (children, containers)
        self.stage_ids: Optional[list[str]] = None

    def get(self, name: str) -> SimpleNamespace:
        for image_id, image in self.store.items():
            if name == image_id or name in image["tags"]:
                return SimpleNamespace(id=image_id, labels=image["labels"], tag=lambda *a: None,
                                       attrs={"Size": 2_500_000_000})
        raise docker.errors.ImageNotFound(name)

    def build(self, **options):
        self.builds.append(options)
        number = len(self.builds)
        stages = self.stage_ids if self.stage_ids is not None else [f"sha256:stage{number}"]
        final = f"sha256:final{number}"
        for image in self.store.values():
            image["tags"] = [tag for tag in image["tags"] if tag != options["tag"]]
        for stage in stages:
            self.store.setdefault(stage, {"tags": [], "labels": {}})
        self.store[final] = {"tags": [options["tag"]], "labels": options["labels"]}
        for stage in stages:
            yield {"stream": "Step 1/2 : RUN true\n"}
            yield {"aux": {"ID": stage}}
        yield {"aux": {"ID": final}}
        yield {"stream": f"Successfully built {final[7:19]}\n"}

    def inspect_image(self, image_id: str) -> dict:
        if image_id not in self.store:
            raise docker.errors.ImageNotFound(image_id)
        return {"RepoTags": self.store[image_id]["tags"], "RepoDigests": self.store[image_id].get("digests", [])}

    def remove_image(self, image_id: str) -> None:
        if image_id not in self.store:
            raise docker.errors.ImageNotFound(image_id)
        if image_id in self.in_use:
            raise conflict(image_id)
        del self.store[image_id]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    (folder / ".build-extras" / "wheels").mkdir(parents=True)
    (folder / "Dockerfile").write_text(TWO_STAGES)
    (folder / "data.txt").write_text("data")
    (folder / ".build-extras" / "pip.conf").write_text("[global]\nindex-url = https://one.example/simple\n")
    (folder / ".build-extras" / "ca.crt").write_text("one")
    (folder / ".build-extras" / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"wheel")
    return folder


def digest_of(context: Path, args: Optional[dict] = None, labels: Optional[dict] = None,
              bases: Optional[dict] = None) -> str:
    return image_builds.build_inputs_digest(context, "Dockerfile", args or {"BASE_IMAGE": "b:1"}, labels or {"k": "v"},
                                            bases or {"b:1": "sha256:b"})


def test_digest_follows_what_the_image_is_built_from(context):
    first = digest_of(context)
    assert first.startswith("sha256:") and digest_of(context) == first
    extras = context / ".build-extras"
    # Where pip downloads from and whom it trusts: not what the image holds.
    (extras / "pip.conf").write_text("[global]\nindex-url = https://two.example/simple\n")
    (extras / "ca.crt").unlink()
    assert digest_of(context) == first

    assert digest_of(context, args={"BASE_IMAGE": "b:1", "V": "2"}) != first
    assert digest_of(context, labels={"k": "w"}) != first
    assert digest_of(context, bases={"b:1": "sha256:rebuilt"}) != first
    changes = [
        lambda: (context / "data.txt").write_text("other"),
        lambda: (context / "data.txt").chmod(0o755),
        lambda: (context / "new.txt").write_text(""),
        lambda: (extras / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"other wheel"),
        lambda: (extras / "wheels" / "w-1.0-py3-none-any.whl").rename(extras / "wheels" / "w-2.0-py3-none-any.whl"),
        lambda: (context / "Dockerfile").write_text(TWO_STAGES + "USER 1000\n"),
    ]
    for change in changes:
        before = digest_of(context)
        change()
        assert digest_of(context) != before


def test_dockerfile_bases():
    bases = image_builds.dockerfile_bases(TWO_STAGES, {"BASE_IMAGE": "nav-orch/debian:bookworm"})
    assert bases == ["nav-orch/debian:bookworm"]
    text = ("# syntax comment\nARG BASE=nav-orch/debian:bookworm\nARG TAG\n"
            "FROM --platform=linux/amd64 $BASE AS Build\nRUN true\n"
            "FROM scratch AS empty\nFROM build AS again\nFROM \\\n  other/image:${TAG}\nARG BASE=ignored\n")
    assert image_builds.dockerfile_bases(text, {"TAG": "7"}) == ["nav-orch/debian:bookworm", "other/image:7"]
    assert image_builds.dockerfile_bases(text, {"TAG": "7", "BASE": "x/y:1"}) == ["x/y:1", "other/image:7"]
    with pytest.raises(BadInput, match="cannot tell the image of `FROM other/image:\\$\\{TAG:-1\\}`"):
        image_builds.dockerfile_bases("ARG TAG\nFROM other/image:${TAG:-1}\n", {})
    bake = load_bake_file(images.BAKE_FILE)
    variables = bake.resolve_variables({}, environ={})
    for name in bake.target_names(["cpu", "cuda"]):  # every real target starts FROM its BASE_IMAGE
        target = bake.resolve_target(name, variables)
        text = (bake.root / target.context / target.dockerfile).read_text()
        assert image_builds.dockerfile_bases(text, target.args) == [target.args["BASE_IMAGE"]]


def test_up_to_date():
    info = lambda image_id, digest: engine.ImageInfo(tag="t", id=image_id,  # noqa: E731
                                                            labels={image_builds.BUILD_INPUTS_LABEL: digest})
    assert image_builds.up_to_date([info("sha256:a", "d1")], "d1")
    assert not image_builds.up_to_date([info("sha256:a", "d0")], "d1")
    assert not image_builds.up_to_date([None], "d1")
    assert not image_builds.up_to_date([], "d1")
    assert not image_builds.up_to_date([info("sha256:a", "d1"), info("sha256:b", "d1")], "d1")  # two tags, two images
    assert not image_builds.up_to_date([info("sha256:a", "d1"), None], "d1")
    assert not image_builds.up_to_date([engine.ImageInfo(tag="t", id="sha256:a", labels={})], "d1")


def test_build_image_reports_the_stage_images():
    fake = FakeDocker({})
    fake.stage_ids = ["sha256:s1", "sha256:s2", "sha256:s1"]
    lines: list[str] = []
    built = engine.build_image(fake, Path("/context"), "Dockerfile", ["x/y:1"], {}, {}, lines.append)
    assert built == engine.BuiltImage(id="sha256:final1", size=2_500_000_000, stage_ids=["sha256:s1", "sha256:s2"])
    assert lines[-1] == "Successfully built final1"


def test_remove_untagged_keeps_what_is_named_or_needed():
    fake = FakeDocker({
        "sha256:stage": {"tags": [], "labels": {}},
        "sha256:tagged": {"tags": ["user/image:1"], "labels": {}},
        "sha256:by-digest": {"tags": [], "digests": ["user/image@sha256:0"], "labels": {}},
        "sha256:parent": {"tags": ["<none>:<none>"], "labels": {}},
    })
    fake.in_use.add("sha256:parent")
    lines: list[str] = []
    ids = ["sha256:stage", "sha256:tagged", "sha256:by-digest", "sha256:parent", "sha256:gone"]
    assert engine.remove_untagged(fake, ids, lines.append) == ["sha256:stage"]
    assert set(fake.store) == {"sha256:tagged", "sha256:by-digest", "sha256:parent"}
    assert lines == []  # a conflict is Docker keeping what is needed: nothing to warn about


def test_build_target_skips_unchanged_and_cleans_up(context):
    fake = FakeDocker({"sha256:base": {"tags": ["fake/base:1"], "labels": {}}})
    target = BakeTarget(name="tiny", context="tiny", args={"BASE_IMAGE": "fake/base:1", "TOKEN": "t"},
                        tags=["fake/tiny:1"], labels={"k": "v"})
    lines: list[str] = []

    def build(rebuild: bool = False) -> Optional[str]:
        return image_builds.build_target(fake, context.parent, target, rebuild, lines.append)

    assert build() is None  # nothing carried the tag before
    assert len(fake.builds) == 1 and not fake.builds[0]["nocache"]
    digest = fake.builds[0]["labels"][image_builds.BUILD_INPUTS_LABEL]
    assert fake.builds[0]["labels"] == {"k": "v", image_builds.BUILD_INPUTS_LABEL: digest}
    assert set(fake.store) == {"sha256:base", "sha256:final1"}  # the stage image is gone

    (context / ".build-extras" / "pip.conf").write_text("[global]\n")
    assert build() is None
    assert len(fake.builds) == 1 and lines[-1] == "tiny (fake/tiny:1) is up to date"

    assert build(rebuild=True) == "sha256:final1"  # the tag moved: the caller removes the old image
    assert fake.builds[-1]["nocache"] and set(fake.store) == {"sha256:base", "sha256:final1", "sha256:final2"}

    fake.store["sha256:base2"] = {"tags": ["fake/base:1"], "labels": {}}  # the base was rebuilt
    fake.store["sha256:base"]["tags"] = []
    assert build() == "sha256:final2" and len(fake.builds) == 3

    # A stage without steps ends on its base: never the build's to remove, named or not.
    fake.stage_ids = ["sha256:base2"]
    fake.store["sha256:base2"]["tags"] = []
    target = target.model_copy(update={"args": {"BASE_IMAGE": "sha256:base2", "TOKEN": "t"}})
    build()
    assert "sha256:base2" in fake.store


# --- the real daemon -----------------------------------------------------------------------------

def leftovers(client, token: str) -> list[str]:
    """Dangling images of this test's builds: their history carries its token."""
    return [image.id for image in client.images.list(filters={"dangling": True})
            if any(token in (layer.get("CreatedBy") or "") for layer in client.api.history(image.id))]


@pytest.mark.docker
def test_two_stage_build_leaves_no_untagged_images(tmp_path):
    client = engine.connect()
    if engine.buildx_available():
        pytest.skip("buildx builds with BuildKit, which keeps no stage images")
    if engine.inspect_image(client, image_builds.DEBIAN_BASE) is None:
        pytest.fail(f"{image_builds.DEBIAN_BASE} is missing: run `make setup` first")
    token = uuid.uuid4().hex  # every image of this test is new, and known by it
    tag = f"nav-orch-test/tiny-{token[:12]}:latest"
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "Dockerfile").write_text(TWO_STAGES)
    bake_file = tmp_path / "docker-bake.hcl"
    bake_file.write_text(f"""
variable "MESSAGE" {{
  default = "first"
}}
target "tiny" {{
  context = "tiny"
  args = {{
    BASE_IMAGE = "{image_builds.DEBIAN_BASE}"
    TOKEN      = "{token} ${{MESSAGE}}"
  }}
  tags   = ["{tag}"]
  labels = {{
    "org.nav-orch.test" = "{token}"
  }}
}}
""")
    pip_conf, ca = tmp_path / "pip.conf", tmp_path / "ca.crt"
    pip_conf.write_text("[global]\ntimeout = 5\n")
    ca.write_text("")
    lines: list[str] = []

    def build(**overrides: str) -> str:
        assert image_builds.build_images(client, bake_file, "tiny", overrides, pip_conf, ca, lines.append) == [tag]
        return client.images.get(tag).id

    try:
        first = build()
        assert leftovers(client, token) == []
        assert image_builds.BUILD_INPUTS_LABEL in client.images.get(tag).labels

        lines.clear()
        assert build() == first
        assert lines == [f"tiny ({tag}) is up to date"]

        second = build(MESSAGE="second")
        assert second != first
        with pytest.raises(docker.errors.ImageNotFound):  # the image the tag moved off is gone too
            client.images.get(first)
        assert leftovers(client, token) == []
    finally:
        engine.remove_untagged(client, leftovers(client, token), lambda line: None)
        try:
            client.images.remove(tag)
        except docker.errors.ImageNotFound:
            pass
