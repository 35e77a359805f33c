#pragma once
// ONNX Runtime's C++ API, initialized by RegisterCustomOps from the OrtApi the runtime hands
// over (ORT_API_MANUAL_INIT): the library never links libonnxruntime, so it loads into any
// runtime whose API version is at least the headers' (PyPI's onnxruntime, Debian's).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT
