import os

os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--record", action="store_true", default=False,
                     help="write the measured figures into benchmarks/results/summary.json (default: print only; "
                     "a benchmark run never rewrites committed files unless asked)")
