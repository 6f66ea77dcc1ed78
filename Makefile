# Convenience wrapper over the scripts the README names; each target runs one of them.
#   make model   download a real instruct model into ./models/ (deploy/download-model.sh)
#   make build   configure and build the optimised binary (build/release/wye)
#   make serve   install dependencies, build and start the gateway (deploy/serve.sh)
#   make test    build twice (optimised, ASan+UBSan) and run the whole suite (tests/run)
.PHONY: model build serve test

model:
	bash deploy/download-model.sh

build:
	cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DWYE_TESTS=OFF
	cmake --build build/release

serve:
	bash deploy/serve.sh

test:
	bash tests/run
