#include "onnx/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"

namespace qsl::onnx::ops {
namespace {

std::int64_t product(const dims& s, std::size_t from = 0, std::size_t to = SIZE_MAX) {
  std::int64_t n = 1;
  for (std::size_t i = from; i < std::min(to, s.size()); ++i) n *= s[i];
  return n;
}

std::int64_t normalize_axis(std::int64_t axis, std::int64_t rank, bool inclusive,
                            const std::string& what) {
  const std::int64_t limit = inclusive ? rank : rank - 1;
  if (axis < 0) axis += rank;
  qsl::detail::require(axis >= 0 && axis <= limit, what + ": axis " + std::to_string(axis) +
                                                       " is out of range for rank " +
                                                       std::to_string(rank));
  return axis;
}

void require_nchw(const tensor& x, const std::string& what) {
  qsl::detail::require(x.shape.size() == 4,
                       what + ": input is " + shape_text(x.shape) + "; expected N x C x H x W");
}

// Output size of a 2-D window along one axis.
std::int64_t window_out(std::int64_t in, std::int64_t k, std::int64_t stride, std::int64_t pad0,
                        std::int64_t pad1, std::int64_t dilation, bool ceil_mode) {
  const std::int64_t span = dilation * (k - 1) + 1, padded = in + pad0 + pad1;
  if (padded < span) return 0;
  const std::int64_t steps = padded - span;
  return (ceil_mode ? (steps + stride - 1) / stride : steps / stride) + 1;
}

template <class Reduce>
tensor pool(const tensor& x, const pool_attributes& a, const std::string& what, Reduce reduce) {
  require_nchw(x, what);
  const std::int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
  const std::int64_t oh = window_out(h, a.kernel[0], a.strides[0], a.pads[0], a.pads[2],
                                     a.dilations[0], a.ceil_mode);
  const std::int64_t ow = window_out(w, a.kernel[1], a.strides[1], a.pads[1], a.pads[3],
                                     a.dilations[1], a.ceil_mode);
  qsl::detail::require(oh >= 1 && ow >= 1, what + ": a " + std::to_string(h) + " x " +
                                               std::to_string(w) +
                                               " input is smaller than the window");
  tensor y{{n, c, oh, ow}, std::vector<float>(static_cast<std::size_t>(n * c * oh * ow))};
  // Planes are independent: spread them over the CPU threads, a few hundred outputs per task.
  const std::int64_t planes = n * c, per_task = std::max<std::int64_t>(1, 1024 / (oh * ow));
  qsl::detail::cpu::thread_pool::instance().run(
      (planes + per_task - 1) / per_task, [&](std::int64_t task) {
        const std::int64_t last = std::min(planes, (task + 1) * per_task);
        for (std::int64_t plane = task * per_task; plane < last; ++plane)
          for (std::int64_t oy = 0; oy < oh; ++oy)
            for (std::int64_t ox = 0; ox < ow; ++ox) {
              const std::int64_t y0 = oy * a.strides[0] - a.pads[0];
              const std::int64_t x0 = ox * a.strides[1] - a.pads[1];
              y.data[static_cast<std::size_t>((plane * oh + oy) * ow + ox)] =
                  reduce(x.data.data() + plane * h * w, h, w, y0, x0);
            }
      });
  return y;
}

}  // namespace

std::string shape_text(const dims& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

tensor elementwise(const tensor& a, const tensor& b, binary op, const std::string& what) {
  const std::size_t rank = std::max(a.shape.size(), b.shape.size());
  dims sa(rank, 1), sb(rank, 1), out(rank);
  std::copy(a.shape.begin(), a.shape.end(), sa.begin() + (rank - a.shape.size()));
  std::copy(b.shape.begin(), b.shape.end(), sb.begin() + (rank - b.shape.size()));
  for (std::size_t i = 0; i < rank; ++i) {
    qsl::detail::require(sa[i] == sb[i] || sa[i] == 1 || sb[i] == 1,
                         what + ": shapes " + shape_text(a.shape) + " and " +
                             shape_text(b.shape) + " do not broadcast");
    out[i] = sa[i] == 1 ? sb[i] : sa[i];
  }
  tensor y{out, std::vector<float>(static_cast<std::size_t>(product(out)))};
  // Strides of a and b over the output index (0 along broadcast dims).
  dims stride_a(rank, 0), stride_b(rank, 0);
  for (std::int64_t i = static_cast<std::int64_t>(rank) - 1, ea = 1, eb = 1; i >= 0; --i) {
    stride_a[i] = sa[i] == 1 ? 0 : ea;
    stride_b[i] = sb[i] == 1 ? 0 : eb;
    ea *= sa[i];
    eb *= sb[i];
  }
  dims index(rank, 0);
  std::int64_t ia = 0, ib = 0;
  for (float& v : y.data) {
    const float l = a.data[static_cast<std::size_t>(ia)], r = b.data[static_cast<std::size_t>(ib)];
    v = op == binary::add ? l + r : op == binary::sub ? l - r : op == binary::mul ? l * r : l / r;
    for (std::int64_t i = static_cast<std::int64_t>(rank) - 1; i >= 0; --i) {  // odometer
      ia += stride_a[i];
      ib += stride_b[i];
      if (++index[i] < out[i]) break;
      ia -= stride_a[i] * out[i];
      ib -= stride_b[i] * out[i];
      index[i] = 0;
    }
  }
  return y;
}

tensor apply(const tensor& x, unary op) {
  tensor y = x;
  for (float& v : y.data)
    v = op == unary::relu ? (v > 0 ? v : 0.0f)
        : op == unary::sigmoid ? 1.0f / (1.0f + std::exp(-v))
                               : std::tanh(v);
  return y;
}

tensor max_pool(const tensor& x, const pool_attributes& a, const std::string& what) {
  // The CNN case (2 x 2 windows, stride 2, no pads or dilation): whole rows of windows at once.
  const bool two_by_two = a.kernel == dims{2, 2} && a.strides == dims{2, 2} &&
                          a.dilations == dims{1, 1} && a.pads == dims{0, 0, 0, 0};
  if (two_by_two && x.shape.size() == 4 && x.shape[2] >= 2 && x.shape[3] >= 2) {
    const std::int64_t planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3];
    const std::int64_t oh = a.ceil_mode ? (h + 1) / 2 : h / 2, ow = a.ceil_mode ? (w + 1) / 2 : w / 2;
    if (oh == h / 2 && ow == w / 2) {  // ceil_mode adds no partial window
      tensor y{{x.shape[0], x.shape[1], oh, ow},
               std::vector<float>(static_cast<std::size_t>(planes * oh * ow))};
      qsl::detail::cpu::thread_pool::instance().run(planes, [&](std::int64_t p) {
        const float* img = x.data.data() + p * h * w;
        float* out = y.data.data() + p * oh * ow;
        for (std::int64_t oy = 0; oy < oh; ++oy) {
          const float* r0 = img + 2 * oy * w;
          const float* r1 = r0 + w;
          for (std::int64_t ox = 0; ox < ow; ++ox)
            out[oy * ow + ox] = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]),
                                         std::max(r1[2 * ox], r1[2 * ox + 1]));
        }
      });
      return y;
    }
  }
  return pool(x, a, what, [&](const float* img, std::int64_t h, std::int64_t w, std::int64_t y0,
                              std::int64_t x0) {
    float best = -std::numeric_limits<float>::infinity();
    const std::int64_t kh = a.kernel[0], kw = a.kernel[1], dy = a.dilations[0], dx = a.dilations[1];
    if (y0 >= 0 && x0 >= 0 && y0 + (kh - 1) * dy < h && x0 + (kw - 1) * dx < w) {
      for (std::int64_t ky = 0; ky < kh; ++ky)  // the window is inside: no tests per value
        for (std::int64_t kx = 0; kx < kw; ++kx)
          best = std::max(best, img[(y0 + ky * dy) * w + x0 + kx * dx]);
      return best;
    }
    for (std::int64_t ky = 0; ky < a.kernel[0]; ++ky)
      for (std::int64_t kx = 0; kx < a.kernel[1]; ++kx) {
        const std::int64_t iy = y0 + ky * a.dilations[0], ix = x0 + kx * a.dilations[1];
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) best = std::max(best, img[iy * w + ix]);
      }
    return best;
  });
}

tensor average_pool(const tensor& x, const pool_attributes& a, const std::string& what) {
  return pool(x, a, what, [&](const float* img, std::int64_t h, std::int64_t w, std::int64_t y0,
                              std::int64_t x0) {
    float sum = 0;
    std::int64_t inside = 0, padded = 0;
    for (std::int64_t ky = 0; ky < a.kernel[0]; ++ky)
      for (std::int64_t kx = 0; kx < a.kernel[1]; ++kx) {
        const std::int64_t iy = y0 + ky, ix = x0 + kx;
        // With count_include_pad the divisor counts pads, not positions past them (ceil_mode).
        if (iy < h + a.pads[2] && ix < w + a.pads[3]) ++padded;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
          sum += img[iy * w + ix];
          ++inside;
        }
      }
    const std::int64_t count = a.count_include_pad ? padded : inside;
    return count > 0 ? sum / static_cast<float>(count) : 0.0f;
  });
}

tensor global_average_pool(const tensor& x, const std::string& what) {
  qsl::detail::require(x.shape.size() >= 3, what + ": input is " + shape_text(x.shape) +
                                                "; expected N x C x spatial dims");
  const std::int64_t planes = x.shape[0] * x.shape[1], area = product(x.shape, 2);
  dims out = {x.shape[0], x.shape[1]};
  out.resize(x.shape.size(), 1);
  tensor y{out, std::vector<float>(static_cast<std::size_t>(planes))};
  for (std::int64_t p = 0; p < planes; ++p) {
    double sum = 0;
    for (std::int64_t i = 0; i < area; ++i) sum += x.data[static_cast<std::size_t>(p * area + i)];
    y.data[static_cast<std::size_t>(p)] = static_cast<float>(sum / static_cast<double>(area));
  }
  return y;
}

tensor flatten(const tensor& x, std::int64_t axis, const std::string& what) {
  axis = normalize_axis(axis, static_cast<std::int64_t>(x.shape.size()), true, what);
  return {{product(x.shape, 0, static_cast<std::size_t>(axis)),
           product(x.shape, static_cast<std::size_t>(axis))},
          x.data};
}

tensor reshape(const tensor& x, const dims& shape, const std::string& what) {
  dims out = shape;
  std::int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 0) {  // copy the input's dimension (allowzero = 0)
      qsl::detail::require(i < x.shape.size(), what + ": shape " + shape_text(shape) +
                                                   " copies a dimension the input lacks");
      out[i] = x.shape[i];
    }
    if (out[i] == -1) {
      qsl::detail::require(infer < 0, what + ": shape " + shape_text(shape) + " has two -1");
      infer = static_cast<std::int64_t>(i);
    } else {
      qsl::detail::require(out[i] >= 0, what + ": shape " + shape_text(shape) +
                                            " has a negative dimension");
      known *= out[i];
    }
  }
  const std::int64_t total = x.elements();
  if (infer >= 0) {
    qsl::detail::require(known > 0 && total % known == 0,
                         what + ": cannot reshape " + shape_text(x.shape) + " to " +
                             shape_text(shape));
    out[static_cast<std::size_t>(infer)] = total / known;
  }
  qsl::detail::require(product(out) == total, what + ": cannot reshape " + shape_text(x.shape) +
                                                  " to " + shape_text(shape));
  return {out, x.data};
}

tensor transpose(const tensor& x, const dims& perm_in, const std::string& what) {
  const std::size_t rank = x.shape.size();
  dims perm = perm_in;
  if (perm.empty())
    for (std::size_t i = 0; i < rank; ++i) perm.push_back(static_cast<std::int64_t>(rank - 1 - i));
  std::vector<bool> seen(rank, false);
  qsl::detail::require(perm.size() == rank, what + ": perm has " + std::to_string(perm.size()) +
                                                " entries for rank " + std::to_string(rank));
  for (std::int64_t p : perm) {
    qsl::detail::require(p >= 0 && p < static_cast<std::int64_t>(rank) && !seen[p],
                         what + ": perm is not a permutation");
    seen[p] = true;
  }
  dims out(rank), in_stride(rank);
  for (std::int64_t i = static_cast<std::int64_t>(rank) - 1, s = 1; i >= 0; --i) {
    in_stride[i] = s;
    s *= x.shape[i];
  }
  for (std::size_t i = 0; i < rank; ++i) out[i] = x.shape[perm[i]];
  tensor y{out, std::vector<float>(x.data.size())};
  dims index(rank, 0);
  for (float& v : y.data) {
    std::int64_t src = 0;
    for (std::size_t i = 0; i < rank; ++i) src += index[i] * in_stride[perm[i]];
    v = x.data[static_cast<std::size_t>(src)];
    for (std::int64_t i = static_cast<std::int64_t>(rank) - 1; i >= 0; --i) {
      if (++index[i] < out[i]) break;
      index[i] = 0;
    }
  }
  return y;
}

tensor softmax(const tensor& x, std::int64_t axis, std::int64_t opset, const std::string& what) {
  const auto rank = static_cast<std::int64_t>(x.shape.size());
  axis = normalize_axis(axis, rank, false, what);
  // opset < 13: one softmax over all dims from `axis` on; opset >= 13: over `axis` alone.
  const std::int64_t outer = product(x.shape, 0, static_cast<std::size_t>(axis));
  const std::int64_t length = opset >= 13 ? x.shape[axis] : product(x.shape, static_cast<std::size_t>(axis));
  const std::int64_t inner = opset >= 13 ? product(x.shape, static_cast<std::size_t>(axis) + 1) : 1;
  tensor y = x;
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      auto at = [&](std::int64_t k) -> float& {
        return y.data[static_cast<std::size_t>((o * length + k) * inner + i)];
      };
      float top = -std::numeric_limits<float>::infinity();
      for (std::int64_t k = 0; k < length; ++k) top = std::max(top, at(k));
      double sum = 0;
      for (std::int64_t k = 0; k < length; ++k) sum += (at(k) = std::exp(at(k) - top));
      for (std::int64_t k = 0; k < length; ++k) at(k) = static_cast<float>(at(k) / sum);
    }
  return y;
}

tensor batch_norm(const tensor& x, const tensor& scale, const tensor& bias, const tensor& mean,
                  const tensor& var, float epsilon, const std::string& what) {
  qsl::detail::require(x.shape.size() >= 2, what + ": input is " + shape_text(x.shape) +
                                                "; expected N x C x ...");
  const std::int64_t c = x.shape[1], inner = product(x.shape, 2);
  for (const tensor* t : {&scale, &bias, &mean, &var})
    qsl::detail::require(t->elements() == c, what + ": parameters must have " +
                                                 std::to_string(c) + " values (channels)");
  tensor y = x;
  for (std::int64_t n = 0; n < x.shape[0]; ++n)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const float k = scale.data[ch] / std::sqrt(var.data[ch] + epsilon);
      const float b = bias.data[ch] - mean.data[ch] * k;
      float* p = y.data.data() + (n * c + ch) * inner;
      for (std::int64_t i = 0; i < inner; ++i) p[i] = p[i] * k + b;
    }
  return y;
}

tensor concat(const std::vector<const tensor*>& parts, std::int64_t axis, const std::string& what) {
  qsl::detail::require(!parts.empty(), what + ": no inputs");
  const auto rank = static_cast<std::int64_t>(parts[0]->shape.size());
  axis = normalize_axis(axis, rank, false, what);
  dims out = parts[0]->shape;
  out[axis] = 0;
  for (const tensor* p : parts) {
    qsl::detail::require(static_cast<std::int64_t>(p->shape.size()) == rank,
                         what + ": inputs of different ranks");
    for (std::int64_t i = 0; i < rank; ++i)
      qsl::detail::require(i == axis || p->shape[i] == parts[0]->shape[i],
                           what + ": " + shape_text(p->shape) + " and " +
                               shape_text(parts[0]->shape) + " differ outside axis " +
                               std::to_string(axis));
    out[axis] += p->shape[axis];
  }
  const std::int64_t outer = product(out, 0, static_cast<std::size_t>(axis));
  const std::int64_t inner = product(out, static_cast<std::size_t>(axis) + 1);
  tensor y{out, {}};
  y.data.reserve(static_cast<std::size_t>(product(out)));
  for (std::int64_t o = 0; o < outer; ++o)
    for (const tensor* p : parts) {
      const std::int64_t block = p->shape[axis] * inner;
      y.data.insert(y.data.end(), p->data.begin() + o * block, p->data.begin() + (o + 1) * block);
    }
  return y;
}

}  // namespace qsl::onnx::ops
