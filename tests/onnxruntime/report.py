"""The failure count the ONNX Runtime check scripts share: check() prints a failed condition and
counts it; a script exits with failures() != 0."""
_failures = 0


def check(condition, message):
    global _failures
    if not condition:
        _failures += 1
        print("FAIL:", message)


def failures():
    return _failures
