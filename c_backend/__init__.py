"""c_backend: translate a compact Keras model into LIDE-style dataflow C."""
