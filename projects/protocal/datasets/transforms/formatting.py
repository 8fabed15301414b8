# owned by the codec/transforms helper
