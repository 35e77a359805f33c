#pragma once
// The fixture of every test that runs once per CPU target the machine supports: switches to
// the target under test and restores the active target and thread count afterwards.
#include <gtest/gtest.h>

#include "qsl/cpu.hpp"

namespace qsl::test {

/// Restores the active target and thread count when it goes out of scope.
class cpu_settings_guard {
 public:
  cpu_settings_guard() : target_(qsl::active_cpu_target()), threads_(qsl::cpu_threads()) {}
  ~cpu_settings_guard() {
    qsl::set_cpu_target(target_);
    qsl::set_cpu_threads(threads_);
  }
  cpu_settings_guard(const cpu_settings_guard&) = delete;
  cpu_settings_guard& operator=(const cpu_settings_guard&) = delete;

 private:
  qsl::cpu_target target_;
  int threads_;
};

class on_each_cpu_target : public testing::TestWithParam<qsl::cpu_target> {
 protected:
  void SetUp() override { qsl::set_cpu_target(GetParam()); }

 private:
  cpu_settings_guard saved_;
};

}  // namespace qsl::test
