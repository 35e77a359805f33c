#pragma once
// The shared ending of the command-line tools: JSON reports written atomically, and one
// mapping of exceptions to exit codes (0 done, 1 a mistake in the command or its data, 2 a bad
// model or an unexpected failure).

#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "qsl/onnx.hpp"
#include "qsl/serialize.hpp"

namespace qsl::tools {

inline void write_json(const std::string& path, const nlohmann::json& report) {
  const std::string text = report.dump(2) + "\n";
  write_file_atomically(path, reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
}

template <class Run>
int tool_main(const char* name, Run run) {
  try {
    return run();
  } catch (const qsl::onnx::model_error& e) {
    std::fprintf(stderr, "%s: bad model: %s\n", name, e.what());
    return 2;
  } catch (const qsl::error& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory: the model or its inputs need more than this machine "
                 "can allocate\n", name);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 2;
  }
}

}  // namespace qsl::tools
