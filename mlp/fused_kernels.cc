// Training-mode batch normalization and dropout as fused CPU kernels (see mlp/fused.py).
//
// TensorFlow spends about a dozen element-wise ops on a layer's batch norm and dropout in
// training, each a pass over the batch, and draws dropout masks with Philox. Here:
//   MlpBatchNormDropout      y = dropout(batch_norm(x)): one pass for the batch statistics,
//                            one for the output.
//   MlpBatchNormDropoutGrad  its gradient: one pass for the sums, one for dx.
//   MlpDropout               y = dropout(x); it is linear, so its gradient is MlpDropout of dy
//                            with the same seed.
//   MlpApplyAdam             Adam's update of a variable, with the L2 term's gradient added to
//                            the gradient, in one pass over the variable and its two slots.
// The batch-norm and dropout kernels take [rows, features] float32 and shard the features over
// the CPU's threads; MlpApplyAdam shards the variable's elements.
//
// Dropout keeps element i (row-major index) iff hash(i) >= rate * 2^32 and scales kept elements
// by 1 / (1 - rate). hash is two rounds of MurmurHash3's 32-bit finalizer keyed by a 64-bit key
// mixed (SplitMix64) from the op's int64 seed pair: a pure function of (seed, i), cheap enough to
// vectorize, so the backward pass recomputes masks instead of storing them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

inline uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint32_t Fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bU;
  h ^= h >> 13;
  h *= 0xc2b2ae35U;
  return h ^ (h >> 16);
}

// The dropout mask of one op call. Loops use copies of its fields in locals, so the compiler sees
// no aliasing with their stores and vectorizes the hash.
struct DropoutMask {
  DropoutMask(const Tensor& seed, float rate) {
    auto s = seed.flat<int64_t>();
    const uint64_t key =
        SplitMix64(SplitMix64(static_cast<uint64_t>(s(0))) ^ static_cast<uint64_t>(s(1)));
    key0 = static_cast<uint32_t>(key);
    key1 = static_cast<uint32_t>(key >> 32);
    const double t = std::round(static_cast<double>(rate) * 4294967296.0);
    threshold = static_cast<uint32_t>(std::min(t, 4294967295.0));
    scale = 1.0f / (1.0f - rate);
    on = rate > 0.0f;
  }
  static inline float At(uint32_t i, uint32_t k0, uint32_t k1, uint32_t threshold, float scale) {
    return Fmix32(Fmix32(i ^ k0) + k1) >= threshold ? scale : 0.0f;
  }
  // out[j] = in[j] * mask(first + j) for j < n; a copy when the rate is 0.
  void Apply(const float* __restrict in, float* __restrict out, int64_t first, int64_t n) const {
    const uint32_t k0 = key0, k1 = key1, t = threshold;
    const float s = scale;
    if (!on) {
      for (int64_t j = 0; j < n; ++j) out[j] = in[j];
      return;
    }
    for (int64_t j = 0; j < n; ++j)
      out[j] = in[j] * At(static_cast<uint32_t>(first + j), k0, k1, t, s);
  }
  uint32_t key0, key1, threshold;
  float scale;
  bool on;
};

// Runs fn(f0, f1) over blocks of features on the CPU device's threads.
template <typename Fn>
void ForFeatures(OpKernelContext* ctx, int64_t rows, int64_t features, Fn fn) {
  auto workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t block = 16;
  const int64_t blocks = (features + block - 1) / block;
  Shard(workers->num_threads, workers->workers, blocks, rows * block * 8,
        [&](int64_t b0, int64_t b1) { fn(b0 * block, std::min(b1 * block, features)); });
}

// Outputs: [rows, features] like input `matrix`, then two [features] like input `vector`.
absl::Status MatrixAndTwoVectors(shape_inference::InferenceContext* c, int matrix, int vector) {
  c->set_output(0, c->input(matrix));
  c->set_output(1, c->input(vector));
  c->set_output(2, c->input(vector));
  return absl::OkStatus();
}

absl::Status CheckRate(float rate) {
  if (!(rate >= 0.0f && rate < 1.0f)) {
    return errors::InvalidArgument("dropout rate must be in [0, 1), got ", rate);
  }
  return absl::OkStatus();
}

// x is [rows, features], seed a pair, and the inputs `vectors` are [features].
void CheckInputs(OpKernelContext* ctx, const Tensor& x, const Tensor& seed,
                 std::initializer_list<int> vectors) {
  OP_REQUIRES(ctx, x.dims() == 2,
              errors::InvalidArgument("x must be [rows, features], got ", x.shape().DebugString()));
  OP_REQUIRES(ctx, x.NumElements() <= 4294967295LL,
              errors::InvalidArgument("x has more than 2^32 - 1 elements"));
  OP_REQUIRES(ctx, seed.dims() == 1 && seed.dim_size(0) == 2,
              errors::InvalidArgument("seed must be a pair, got ", seed.shape().DebugString()));
  for (int i : vectors) {
    const Tensor& v = ctx->input(i);
    OP_REQUIRES(ctx, v.dims() == 1 && v.dim_size(0) == x.dim_size(1),
                errors::InvalidArgument("input ", i, " must be [features], got ",
                                        v.shape().DebugString()));
  }
}

}  // namespace

REGISTER_OP("MlpDropout")
    .Input("x: float")
    .Input("seed: int64")
    .Attr("rate: float")
    .Output("y: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

class MlpDropoutOp : public OpKernel {
 public:
  explicit MlpDropoutOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rate", &rate_));
    OP_REQUIRES_OK(ctx, CheckRate(rate_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    CheckInputs(ctx, x, ctx->input(1), {});
    if (!ctx->status().ok()) return;
    const DropoutMask mask(ctx->input(1), rate_);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const int64_t rows = x.dim_size(0), features = x.dim_size(1);
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    ForFeatures(ctx, rows, features, [&](int64_t f0, int64_t f1) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r * features + f0;
        mask.Apply(xp + row, yp + row, row, f1 - f0);
      }
    });
  }

 private:
  float rate_;
};
REGISTER_KERNEL_BUILDER(Name("MlpDropout").Device(DEVICE_CPU), MlpDropoutOp);

REGISTER_OP("MlpBatchNormDropout")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("seed: int64")
    .Attr("epsilon: float")
    .Attr("rate: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("variance: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      return MatrixAndTwoVectors(c, 0, 1);  // y like x; mean, variance like gamma
    });

// The attributes both batch-norm kernels take.
class BatchNormDropoutKernel : public OpKernel {
 public:
  explicit BatchNormDropoutKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rate", &rate_));
    OP_REQUIRES_OK(ctx, CheckRate(rate_));
    OP_REQUIRES(ctx, epsilon_ > 0.0f && std::isfinite(epsilon_),
                errors::InvalidArgument("epsilon must be positive and finite, got ", epsilon_));
  }

 protected:
  // Batch statistics need at least one row (the mean of none is 0 / 0).
  static void CheckRows(OpKernelContext* ctx, const Tensor& x) {
    OP_REQUIRES(ctx, x.dim_size(0) > 0,
                errors::InvalidArgument("batch norm needs at least one row, got x of shape ",
                                        x.shape().DebugString()));
  }

  float epsilon_, rate_;
};

class MlpBatchNormDropoutOp : public BatchNormDropoutKernel {
 public:
  using BatchNormDropoutKernel::BatchNormDropoutKernel;

  // mean and the biased variance over the rows, per feature (accumulated in double, so the
  // one-pass formula E[x^2] - E[x]^2 keeps float32 precision); y = dropout(x * s + t) with
  // s = gamma / sqrt(variance + epsilon), t = beta - mean * s.
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    CheckInputs(ctx, x, ctx->input(3), {1, 2});
    if (!ctx->status().ok()) return;
    CheckRows(ctx, x);
    if (!ctx->status().ok()) return;
    const int64_t rows = x.dim_size(0), features = x.dim_size(1);
    const DropoutMask mask(ctx->input(3), rate_);
    Tensor *y = nullptr, *mean = nullptr, *variance = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({features}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({features}), &variance));
    const float* xp = x.flat<float>().data();
    const float* gamma = ctx->input(1).flat<float>().data();
    const float* beta = ctx->input(2).flat<float>().data();
    float* yp = y->flat<float>().data();
    float* mean_p = mean->flat<float>().data();
    float* variance_p = variance->flat<float>().data();
    ForFeatures(ctx, rows, features, [&](int64_t f0, int64_t f1) {
      const uint32_t k0 = mask.key0, k1 = mask.key1, threshold = mask.threshold;
      const float keep_scale = mask.scale;
      const bool masked = mask.on;
      const int64_t width = f1 - f0;
      std::vector<double> sums(2 * width, 0.0);
      std::vector<float> factors(2 * width);
      double* __restrict sum = sums.data();
      double* __restrict sum_sq = sum + width;
      float* __restrict scale = factors.data();
      float* __restrict shift = scale + width;
      for (int64_t r = 0; r < rows; ++r) {
        const float* __restrict xr = xp + r * features + f0;
        for (int64_t j = 0; j < width; ++j) {
          const double v = xr[j];
          sum[j] += v;
          sum_sq[j] += v * v;
        }
      }
      for (int64_t j = 0; j < width; ++j) {
        const double m = sum[j] / rows;
        const double var = std::max(sum_sq[j] / rows - m * m, 0.0);
        mean_p[f0 + j] = static_cast<float>(m);
        variance_p[f0 + j] = static_cast<float>(var);
        const double s = gamma[f0 + j] / std::sqrt(var + epsilon_);
        scale[j] = static_cast<float>(s);
        shift[j] = static_cast<float>(beta[f0 + j] - m * s);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r * features + f0;
        const float* __restrict xr = xp + row;
        float* __restrict yr = yp + row;
        if (masked) {
          for (int64_t j = 0; j < width; ++j)
            yr[j] = (xr[j] * scale[j] + shift[j]) *
                    DropoutMask::At(static_cast<uint32_t>(row + j), k0, k1, threshold, keep_scale);
        } else {
          for (int64_t j = 0; j < width; ++j) yr[j] = xr[j] * scale[j] + shift[j];
        }
      }
    });
  }
};
REGISTER_KERNEL_BUILDER(Name("MlpBatchNormDropout").Device(DEVICE_CPU), MlpBatchNormDropoutOp);

REGISTER_OP("MlpBatchNormDropoutGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("variance: float")
    .Input("seed: int64")
    .Attr("epsilon: float")
    .Attr("rate: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      return MatrixAndTwoVectors(c, 1, 2);  // dx like x; dgamma, dbeta like gamma
    });

class MlpBatchNormDropoutGradOp : public BatchNormDropoutKernel {
 public:
  using BatchNormDropoutKernel::BatchNormDropoutKernel;

  // With dz = dy * mask and xhat = (x - mean) / sqrt(variance + epsilon):
  // dbeta = sum dz, dgamma = sum dz * xhat, dx = gamma / sqrt(variance + epsilon) *
  // (dz - (dbeta + xhat * dgamma) / rows), computed as a * dz + b * x + c per feature.
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    CheckInputs(ctx, x, ctx->input(5), {2, 3, 4});
    if (!ctx->status().ok()) return;
    CheckRows(ctx, x);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                errors::InvalidArgument("dy and x must have the same shape"));
    const int64_t rows = x.dim_size(0), features = x.dim_size(1);
    const DropoutMask mask(ctx->input(5), rate_);
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({features}), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({features}), &dbeta));
    const float* dyp = dy.flat<float>().data();
    const float* xp = x.flat<float>().data();
    const float* gamma = ctx->input(2).flat<float>().data();
    const float* mean = ctx->input(3).flat<float>().data();
    const float* variance = ctx->input(4).flat<float>().data();
    float* dxp = dx->flat<float>().data();
    float* dgamma_p = dgamma->flat<float>().data();
    float* dbeta_p = dbeta->flat<float>().data();
    ForFeatures(ctx, rows, features, [&](int64_t f0, int64_t f1) {
      const int64_t width = f1 - f0;
      std::vector<float> per_feature(5 * width, 0.0f);
      float* __restrict sum_dz = per_feature.data();
      float* __restrict sum_dz_centered = sum_dz + width;
      float* __restrict a = sum_dz + 2 * width;
      float* __restrict b = sum_dz + 3 * width;
      float* __restrict c = sum_dz + 4 * width;
      const float* __restrict mu = mean + f0;
      // Pass 1: dz into dx's buffer (its own loop, which vectorizes), then the sums.
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r * features + f0;
        const float* __restrict xr = xp + row;
        float* __restrict dzr = dxp + row;
        mask.Apply(dyp + row, dzr, row, width);
        for (int64_t j = 0; j < width; ++j) {
          sum_dz[j] += dzr[j];
          sum_dz_centered[j] += dzr[j] * (xr[j] - mu[j]);
        }
      }
      for (int64_t j = 0; j < width; ++j) {
        const float inv_std = 1.0f / std::sqrt(variance[f0 + j] + epsilon_);
        const float dg = sum_dz_centered[j] * inv_std;
        dgamma_p[f0 + j] = dg;
        dbeta_p[f0 + j] = sum_dz[j];
        a[j] = gamma[f0 + j] * inv_std;
        b[j] = -a[j] * inv_std * dg / rows;
        c[j] = -a[j] * sum_dz[j] / rows - b[j] * mu[j];
      }
      // Pass 2: dx = a dz + b x + c.
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r * features + f0;
        const float* __restrict xr = xp + row;
        float* __restrict dxr = dxp + row;
        for (int64_t j = 0; j < width; ++j) dxr[j] = a[j] * dxr[j] + b[j] * xr[j] + c[j];
      }
    });
  }
};
REGISTER_KERNEL_BUILDER(Name("MlpBatchNormDropoutGrad").Device(DEVICE_CPU),
                        MlpBatchNormDropoutGradOp);

REGISTER_OP("MlpApplyAdam")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("gradient: float")
    .Input("alpha: float")
    .Input("one_minus_beta1: float")
    .Input("one_minus_beta2: float")
    .Input("epsilon: float")
    .Input("weight_factor: float")
    .SetShapeFn(shape_inference::NoOutputs);

namespace {

// Whether resource variable `var` can take the update: initialized, float32, of `shape`. Hold
// var->mu().
absl::Status CheckVariable(int input, Var* var, const TensorShape& shape) {
  const Tensor* t = var->tensor();
  if (!var->is_initialized) {
    return errors::FailedPrecondition("input ", input, ": the variable is not initialized");
  }
  if (t->dtype() != DT_FLOAT) {
    return errors::InvalidArgument("input ", input, ": the variable must be float32, got ",
                                   DataTypeString(t->dtype()));
  }
  if (t->shape() != shape) {
    return errors::InvalidArgument("input ", input, " has shape ", t->shape().DebugString(),
                                   ", the gradient ", shape.DebugString());
  }
  return absl::OkStatus();
}

// Gives `var` a buffer of its own if a read still holds its buffer (so that read keeps the value
// it read), as TensorFlow's own update ops do. Hold var->mu().
absl::Status CopyIfShared(OpKernelContext* ctx, Var* var) {
  Tensor* t = var->tensor();
  if (var->copy_on_read_mode.load() || !t->RefCountIsOne()) {
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(DT_FLOAT, t->shape(), &copy));
    std::copy_n(t->flat<float>().data(), t->NumElements(), copy.flat<float>().data());
    *t = copy;
  }
  return absl::OkStatus();
}

}  // namespace

// Adam's update of one variable with the L2 term's gradient folded in, in one pass:
//   g = gradient + weight_factor * var
//   m += (g - m) * one_minus_beta1;  v += (g^2 - v) * one_minus_beta2
//   var -= m * alpha / (sqrt(v) + epsilon)
// with alpha = lr sqrt(1 - beta2^t) / (1 - beta1^t). This is ResourceApplyAdam's arithmetic,
// operation for operation (the library is built without fused multiply-adds, see mlp/fused.py),
// so with weight_factor 0 it gives the same bits; TensorFlow's kernel takes three passes over
// the variable's memory and the L2 term a fourth.
class MlpApplyAdamOp : public OpKernel {
 public:
  explicit MlpApplyAdamOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> variables[3];
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, i), &variables[i]));
    }
    // Locked in address order, as TensorFlow's training ops lock several variables.
    mutex* mutexes[3] = {variables[0]->mu(), variables[1]->mu(), variables[2]->mu()};
    std::sort(mutexes, mutexes + 3);
    OP_REQUIRES(ctx, mutexes[0] != mutexes[1] && mutexes[1] != mutexes[2],
                errors::InvalidArgument("var, m and v must be three different variables"));
    mutex_lock lock0(*mutexes[0]), lock1(*mutexes[1]), lock2(*mutexes[2]);
    // Every input is checked before any variable is touched.
    const Tensor& gradient = ctx->input(3);
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES_OK(ctx, CheckVariable(i, variables[i].get(), gradient.shape()));
    }
    float scalars[5];
    for (int i = 0; i < 5; ++i) {
      OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(ctx->input(4 + i).shape()),
                  errors::InvalidArgument("input ", 4 + i, " must be a scalar"));
      scalars[i] = ctx->input(4 + i).scalar<float>()();
    }
    for (int i = 0; i < 3; ++i) OP_REQUIRES_OK(ctx, CopyIfShared(ctx, variables[i].get()));
    float* wp = variables[0]->tensor()->flat<float>().data();
    float* mp = variables[1]->tensor()->flat<float>().data();
    float* vp = variables[2]->tensor()->flat<float>().data();
    const float* gp = gradient.flat<float>().data();
    auto workers = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(workers->num_threads, workers->workers, gradient.NumElements(), 16,
          [&](int64_t begin, int64_t end) {
            float* __restrict w = wp;
            float* __restrict m = mp;
            float* __restrict v = vp;
            const float* __restrict g = gp;
            const float alpha = scalars[0], beta1 = scalars[1], beta2 = scalars[2],
                        epsilon = scalars[3], factor = scalars[4];
            for (int64_t i = begin; i < end; ++i) {
              const float gi = g[i] + factor * w[i];
              const float mi = m[i] + (gi - m[i]) * beta1;
              const float vi = v[i] + (gi * gi - v[i]) * beta2;
              m[i] = mi;
              v[i] = vi;
              w[i] = w[i] - mi * alpha / (std::sqrt(vi) + epsilon);
            }
          });
  }
};
REGISTER_KERNEL_BUILDER(Name("MlpApplyAdam").Device(DEVICE_CPU), MlpApplyAdamOp);

}  // namespace tensorflow
