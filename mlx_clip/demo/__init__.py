"""The bundled emoji set and a tiny random CLIP: what the offline tour runs on."""
