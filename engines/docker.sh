engine_docker() { :; }
