#pragma once
// The output error both code types report (normalized_output_error for weight_code in
// decompose/decompose.cpp and for twd_code in twd/twd_code.cpp), computed one way.

#include <Eigen/Core>
#include <string>

#include "qsl/error.hpp"

namespace qsl::detail {

/// ||(W - W_hat) X^T||^2 / ||W X^T||^2 in double (the absolute error when W X^T = 0). Checks X
/// against W before calling `reconstruct` (which returns W_hat and may check the code itself).
template <class Reconstruct>
double normalized_output_error(const Eigen::Ref<const Eigen::MatrixXf>& w,
                               const Eigen::Ref<const Eigen::MatrixXf>& x,
                               Reconstruct&& reconstruct) {
  require(x.cols() == w.cols(), "normalized_output_error: x has " + std::to_string(x.cols()) +
                                    " columns; expected " + std::to_string(w.cols()));
  const Eigen::MatrixXd xd = x.cast<double>();
  const Eigen::MatrixXd wd = w.cast<double>();
  const double norm = (wd * xd.transpose()).squaredNorm();
  const double err = ((wd - reconstruct().template cast<double>()) * xd.transpose()).squaredNorm();
  return norm > 0 ? err / norm : err;
}

}  // namespace qsl::detail
