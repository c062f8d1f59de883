# The two commands of the README, and a few more.
.PHONY: demo test test-cc test-py bench setup clean

demo:            ## set up, start a local cluster and run the example
	scripts/setup.sh
	.venv/bin/python examples/quickstart.py

test:            ## set up and run every test (C++ and Python)
	scripts/setup.sh --with-tests
	$(MAKE) --no-print-directory test-cc test-py

test-cc:
	cd $$(ls -d build/cp3*/ | head -n 1) && ctest --output-on-failure --timeout 120

test-py:
	.venv/bin/python -m pytest -q tests

bench:           ## run Corral's microbenchmarks with the physical floor beside them
	scripts/setup.sh
	.venv/bin/python bench/run.py

setup:
	scripts/setup.sh

clean:
	rm -rf build
