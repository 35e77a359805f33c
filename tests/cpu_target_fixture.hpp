#pragma once
// The fixture of every test that runs once per CPU target the machine supports: switches to
// the target under test and restores the active target and thread count afterwards.
#include <gtest/gtest.h>

#include "qsl/cpu.hpp"

namespace qsl::test {

class on_each_cpu_target : public testing::TestWithParam<qsl::cpu_target> {
 protected:
  void SetUp() override {
    saved_target_ = qsl::active_cpu_target();
    saved_threads_ = qsl::cpu_threads();
    qsl::set_cpu_target(GetParam());
  }
  void TearDown() override {
    qsl::set_cpu_target(saved_target_);
    qsl::set_cpu_threads(saved_threads_);
  }

 private:
  qsl::cpu_target saved_target_{};
  int saved_threads_ = 0;
};

}  // namespace qsl::test
