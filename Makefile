# The two commands of the README, and a few more.
.PHONY: demo test test-cc test-py bench bench-peers setup wheel clean

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

bench:           ## Corral's benchmarks beside the physical floors
	scripts/setup.sh
	.venv/bin/python bench/run.py

bench-peers:     ## the same workloads on Corral, Ray, Dask and Celery, interleaved; keeps a record
	scripts/setup.sh
	scripts/bench-peers-setup.sh
	.venv/bin/python bench/run.py --peers --record

setup:
	scripts/setup.sh

wheel:           ## wheels for Python 3.11 and 3.12 with their libraries inside (dist/), each checked
	scripts/build-wheel.sh

clean:
	rm -rf build
