// qsl._qsl: the C++ library seen from Python (nanobind). This layer only converts: arrays in
// (already float32, C-contiguous and of the right rank: qsl/__init__.py checks and names every
// bad dtype or shape), views and new arrays out, qsl::error as qsl.Error. Long calls release the
// GIL; a progress callback takes it back for each call.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <Eigen/Core>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qsl/cpu.hpp"
#include "qsl/decompose.hpp"
#include "qsl/error.hpp"
#include "qsl/quantized_dense.hpp"
#include "qsl/twd_dense.hpp"
#include "qsl/version.hpp"
#include "qsl/weight_code.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using rows_in = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using vector_in = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Eigen::Map<const row_major> as_matrix(const rows_in& a) {
  return {a.data(), static_cast<Eigen::Index>(a.shape(0)), static_cast<Eigen::Index>(a.shape(1))};
}

/// A new float32 array that owns its buffer (freed with the array).
template <std::size_t Rank>
nb::ndarray<nb::numpy, float, nb::ndim<Rank>> new_array(std::vector<float>&& values,
                                                        const std::size_t (&shape)[Rank]) {
  auto* owned = new std::vector<float>(std::move(values));
  nb::capsule free(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return nb::ndarray<nb::numpy, float, nb::ndim<Rank>>(owned->data(), Rank, shape, free);
}

/// A read-only view of `data` kept alive by `owner` (the Python object holding it).
template <class T, std::size_t Rank>
nb::ndarray<nb::numpy, const T, nb::ndim<Rank>> view(const T* data,
                                                     const std::size_t (&shape)[Rank],
                                                     nb::handle owner) {
  return nb::ndarray<nb::numpy, const T, nb::ndim<Rank>>(data, Rank, shape, owner);
}

/// Runs `work` without the GIL, with `callback` (None or a callable of (done, total)) as a
/// std::function that takes the GIL for each call. An exception the callback raises stops the
/// work (the library rethrows what a progress call throws) and is raised again here.
template <class Work>
auto with_progress(const nb::object& callback, Work&& work) {
  struct stop_request {};
  auto raised = std::make_shared<std::optional<nb::python_error>>();
  std::function<void(std::int64_t, std::int64_t)> progress;
  if (!callback.is_none())
    progress = [callback, raised](std::int64_t done, std::int64_t total) {
      nb::gil_scoped_acquire gil;
      try {
        callback(done, total);
      } catch (nb::python_error& e) {
        raised->emplace(std::move(e));
        throw stop_request{};
      }
    };
  try {
    nb::gil_scoped_release release;
    return work(progress);
  } catch (const stop_request&) {
    throw std::move(**raised);
  }
}

qsl::decompose_options decompose_options(int bits, int basis, std::int64_t group_size, int method,
                                         int max_iterations,
                                         const std::optional<rows_in>& calibration,
                                         bool error_feedback, float damping, int threads) {
  qsl::decompose_options o;
  o.bits = bits;
  o.basis = static_cast<qsl::basis>(basis);
  o.group_size = group_size;
  o.method = static_cast<qsl::method>(method);
  o.max_iterations = max_iterations;
  if (calibration) o.calibration = as_matrix(*calibration);
  o.error_feedback = error_feedback;
  o.damping = damping;
  o.threads = threads;
  return o;
}

qsl::activation_scaling scaling_of(int scaling) {
  return static_cast<qsl::activation_scaling>(scaling);
}

std::vector<float> bias_of(const std::optional<vector_in>& bias) {
  if (!bias) return {};
  return {bias->data(), bias->data() + bias->shape(0)};
}

nb::bytes as_bytes(const std::vector<std::uint8_t>& data) {
  return nb::bytes(reinterpret_cast<const char*>(data.data()), data.size());
}

/// y = layer(x) for a batch, without the GIL.
template <class Layer>
nb::ndarray<nb::numpy, float, nb::ndim<2>> forward(const Layer& layer, const rows_in& x) {
  const std::size_t batch = x.shape(0);
  const auto out = static_cast<std::size_t>(layer.out_features());
  std::vector<float> y(batch * out);
  {
    nb::gil_scoped_release release;
    layer.forward(x.data(), static_cast<std::int64_t>(batch), y.data());
  }
  return new_array<2>(std::move(y), {batch, out});
}

/// The signs or masks of a code as a read-only (rows, bits, words) view.
nb::ndarray<nb::numpy, const qsl::word, nb::ndim<3>> plane_view(
    const qsl::weight_code& c, const std::vector<qsl::word>& planes, nb::handle owner) {
  return view(planes.data(),
              {static_cast<std::size_t>(c.rows), static_cast<std::size_t>(c.bits),
               static_cast<std::size_t>(c.words_per_plane())},
              owner);
}

void bind_weight_code(nb::module_& m) {
  nb::class_<qsl::weight_code>(
      m, "WeightCode",
      "A weight matrix as k binary/ternary planes per row times real coefficients per group "
      "(qsl::weight_code). Its arrays are read-only views.")
      .def_ro("rows", &qsl::weight_code::rows, "outputs (N)")
      .def_ro("cols", &qsl::weight_code::cols, "inputs (D)")
      .def_ro("bits", &qsl::weight_code::bits, "planes per row (k)")
      .def_ro("group_size", &qsl::weight_code::group_size, "columns per coefficient group")
      .def_prop_ro("groups", &qsl::weight_code::groups, "coefficient groups per row")
      .def_prop_ro(
          "ternary", [](const qsl::weight_code& c) { return c.basis == qsl::basis::ternary; },
          "True for {-1, 0, +1} planes (signs and masks), False for {-1, +1}")
      .def_prop_ro("words_per_plane", &qsl::weight_code::words_per_plane,
                   "64-bit words per plane: ceil(cols / 64)")
      .def_prop_ro(
          "signs",
          [](nb::handle self) {
            const auto& c = nb::cast<const qsl::weight_code&>(self);
            return plane_view(c, c.signs, self);
          },
          "(rows, bits, words) uint64: bit c % 64 of word c // 64 is 1 where the "
          "plane is +1 at column c")
      .def_prop_ro(
          "masks",
          [](nb::handle self) -> nb::object {
            const auto& c = nb::cast<const qsl::weight_code&>(self);
            if (c.masks.empty()) return nb::none();
            return nb::cast(plane_view(c, c.masks, self));
          },
          "ternary codes: (rows, bits, words) uint64, 1 where the plane is nonzero; "
          "None for binary codes")
      .def_prop_ro(
          "coefficients",
          [](nb::handle self) {
            const auto& c = nb::cast<const qsl::weight_code&>(self);
            return view(c.coefficients.data(),
                        {static_cast<std::size_t>(c.rows), static_cast<std::size_t>(c.groups()),
                         static_cast<std::size_t>(c.bits)},
                        self);
          },
          "(rows, groups, bits) float32: alpha of every row, group and plane")
      .def_prop_ro(
          "offsets",
          [](nb::handle self) {
            const auto& c = nb::cast<const qsl::weight_code&>(self);
            return view(c.offsets.data(), {static_cast<std::size_t>(c.rows)}, self);
          },
          "(rows,) float32: the sum of every row of W_hat (derived, not stored)")
      .def_prop_ro(
          "bytes", [](const qsl::weight_code& c) { return c.bytes(); },
          "bytes of the planes, masks, coefficients and offsets in memory")
      .def("_plane_bytes", [](const qsl::weight_code& c, bool masks) {
        return as_bytes(qsl::plane_bytes(c, masks));
      });

  m.def(
      "_decompose",
      [](const rows_in& w, int bits, int basis, std::int64_t group_size, int method,
         int max_iterations, const std::optional<rows_in>& calibration, bool error_feedback,
         float damping, int threads, const nb::object& progress) {
        qsl::decompose_options o =
            decompose_options(bits, basis, group_size, method, max_iterations, calibration,
                              error_feedback, damping, threads);
        return with_progress(progress, [&](auto callback) {
          o.progress = std::move(callback);
          return qsl::decompose(w.data(), static_cast<std::int64_t>(w.shape(0)),
                                static_cast<std::int64_t>(w.shape(1)), o);
        });
      },
      "w"_a, "bits"_a, "basis"_a, "group_size"_a, "method"_a, "max_iterations"_a,
      "calibration"_a.none(), "error_feedback"_a, "damping"_a, "threads"_a, "progress"_a.none());
  m.def("_reconstruct", [](const qsl::weight_code& code) {
    qsl::validate(code);
    std::vector<float> out(static_cast<std::size_t>(code.rows * code.cols));
    {
      nb::gil_scoped_release release;
      for (std::int64_t r = 0; r < code.rows; ++r)
        qsl::reconstruct_row(code, r, out.data() + r * code.cols);
    }
    return new_array<2>(std::move(out),
                        {static_cast<std::size_t>(code.rows), static_cast<std::size_t>(code.cols)});
  });
  m.def("_normalized_error", [](const rows_in& w, const qsl::weight_code& code) {
    const Eigen::MatrixXf dense = as_matrix(w);
    return qsl::normalized_error(dense, code);
  });
}

/// What both layer kinds bind the same way: forward, sizes, bytes and files.
template <class Layer>
void bind_layer(nb::class_<Layer>& c) {
  c.def("forward", [](const Layer& l, const rows_in& x) { return forward(l, x); })
      .def_prop_ro("in_features", &Layer::in_features)
      .def_prop_ro("out_features", &Layer::out_features)
      .def_prop_ro("bytes", &Layer::bytes)
      .def_prop_ro("packed_bytes", &Layer::packed_bytes)
      .def_prop_ro("bits_per_weight", &Layer::bits_per_weight)
      .def_prop_ro("activation_bits", [](const Layer& l) { return l.activations().bits; })
      .def("serialize", [](const Layer& l) { return as_bytes(l.serialize()); })
      .def_static("deserialize",
                  [](const nb::bytes& data) {
                    return Layer::deserialize(static_cast<const std::uint8_t*>(data.data()),
                                              data.size());
                  })
      .def("save", [](const Layer& l, const std::string& path) { l.save(path); })
      .def_static("load", [](const std::string& path) { return Layer::load(path); });
}

void bind_quantized_dense(nb::module_& m) {
  using layer = qsl::quantized_dense;
  nb::class_<layer> dense(m, "_QuantizedDense");
  dense
      .def_static(
          "compress",
          [](const rows_in& w, const std::optional<vector_in>& bias, int bits, int basis,
             std::int64_t group_size, int method, int max_iterations,
             const std::optional<rows_in>& calibration, bool error_feedback, float damping,
             int threads, int activation_bits, int scaling, const nb::object& progress) {
            qsl::quantized_dense_options o;
            o.weights = decompose_options(bits, basis, group_size, method, max_iterations,
                                          calibration, error_feedback, damping, threads);
            o.activation_bits = activation_bits;
            o.scaling = scaling_of(scaling);
            const std::vector<float> b = bias_of(bias);
            return with_progress(progress, [&](auto callback) {
              o.weights.progress = std::move(callback);
              return layer::compress(w.data(), static_cast<std::int64_t>(w.shape(0)),
                                     static_cast<std::int64_t>(w.shape(1)),
                                     b.empty() ? nullptr : b.data(), o);
            });
          },
          "w"_a, "bias"_a.none(), "bits"_a, "basis"_a, "group_size"_a, "method"_a,
          "max_iterations"_a, "calibration"_a.none(), "error_feedback"_a, "damping"_a, "threads"_a,
          "activation_bits"_a, "scaling"_a, "progress"_a.none())
      .def_prop_ro("code", [](const layer& l) { return l.code(); })
      .def_prop_ro("bias", [](nb::handle self) -> nb::object {
        const auto& l = nb::cast<const layer&>(self);
        if (l.bias().empty()) return nb::none();
        return nb::cast(view(l.bias().data(), {l.bias().size()}, self));
      });
  bind_layer(dense);
}

void bind_twd_dense(nb::module_& m) {
  using layer = qsl::twd_dense;
  nb::class_<layer> twd(m, "_TwdDense");
  twd.def_static(
         "compress",
         [](const rows_in& w, const std::optional<vector_in>& bias, int basis_vectors,
            double bits_per_weight, int max_iterations, int refine_iterations,
            const std::optional<rows_in>& calibration, int threads, int activation_bits,
            int scaling, const nb::object& progress) {
           qsl::twd_dense_options o;
           o.factorization.basis_vectors = basis_vectors;
           o.factorization.bits_per_weight = bits_per_weight;
           o.factorization.max_iterations = max_iterations;
           o.factorization.refine_iterations = refine_iterations;
           if (calibration) o.factorization.calibration = as_matrix(*calibration);
           o.factorization.threads = threads;
           o.activation_bits = activation_bits;
           o.scaling = scaling_of(scaling);
           const Eigen::MatrixXf dense = as_matrix(w);
           std::vector<float> b = bias_of(bias);
           return with_progress(progress, [&](auto callback) {
             o.factorization.progress = std::move(callback);
             if (b.empty()) return layer::compress(dense, o);
             return layer::compress(
                 dense,
                 Eigen::Map<const Eigen::VectorXf>(b.data(), static_cast<Eigen::Index>(b.size())),
                 o);
           });
         },
         "w"_a, "bias"_a.none(), "basis_vectors"_a, "bits_per_weight"_a, "max_iterations"_a,
         "refine_iterations"_a, "calibration"_a.none(), "threads"_a, "activation_bits"_a,
         "scaling"_a, "progress"_a.none())
      .def_prop_ro("basis_vectors", &layer::basis_vectors);
  bind_layer(twd);
}

void bind_cpu(nb::module_& m) {
  m.def("cpu_target", [] { return std::string(qsl::to_string(qsl::active_cpu_target())); });
  m.def("set_cpu_target",
        [](const std::string& name) { qsl::set_cpu_target(qsl::parse_cpu_target(name)); });
  m.def("supported_cpu_targets", [] {
    std::vector<std::string> names;
    for (auto t : qsl::supported_cpu_targets()) names.emplace_back(qsl::to_string(t));
    return names;
  });
  m.def("cpu_threads", &qsl::cpu_threads);
  m.def("set_cpu_threads", &qsl::set_cpu_threads);
}

}  // namespace

NB_MODULE(_qsl, m) {
  m.attr("__version__") = std::to_string(qsl::version_major) + "." +
                          std::to_string(qsl::version_minor) + "." +
                          std::to_string(qsl::version_patch);
  // qsl.Error: a ValueError, so code that catches bad values catches qsl's too.
  nb::exception<qsl::error>(m, "Error", PyExc_ValueError);
  bind_weight_code(m);
  bind_quantized_dense(m);
  bind_twd_dense(m);
  bind_cpu(m);
}
