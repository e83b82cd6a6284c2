"""The shared kernel: frames, FLV, AMF, the RTMP protocol core, codec configs. No I/O."""
