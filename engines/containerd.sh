engine_containerd() { :; }
