"""Small Keras models (TensorFlow backend) for nav-orch: an MLP (64 -> 256 -> 10) and a model with
two named inputs and two named outputs, to exercise input/output mapping."""
import keras


def make_keras_mlp(in_features: int = 64, hidden: int = 256, classes: int = 10) -> keras.Model:
    # nav-orch seeds TensorFlow and Keras before calling a factory, so every job builds the same weights.
    inputs = keras.Input(shape=(in_features,), name="features")
    hidden_layer = keras.layers.Dense(hidden, activation="relu", name="hidden")(inputs)
    logits = keras.layers.Dense(classes, name="logits")(hidden_layer)
    return keras.Model(inputs, logits, name="keras_mlp")


def make_keras_two_heads(image_features: int = 32, mask_features: int = 8, classes: int = 5) -> keras.Model:
    image = keras.Input(shape=(image_features,), name="image")
    mask = keras.Input(shape=(mask_features,), name="mask")
    embedding = keras.layers.Dense(64, activation="tanh")(image)
    gate = keras.layers.Dense(64, activation="sigmoid")(mask)
    embedding = keras.layers.Multiply(name="embedding")([embedding, gate])
    # Outputs deliberately not in name order: nav-orch must match them by name, not position.
    scores = keras.layers.Dense(classes, name="scores")(embedding)
    return keras.Model([image, mask], [scores, embedding], name="keras_two_heads")
