// loss_scale: the dynamic loss-scale update, on the device, with the rule of PyTorch's
// `_amp_update_scale_` (torch.cuda.amp.GradScaler):
//
//   found_inf != 0:  scale = scale * backoff;  growth_tracker = 0
//   otherwise:       growth_tracker += 1
//                    if growth_tracker == growth_interval:
//                        s = (f32)(scale * growth); if s is finite, scale = s
//                        growth_tracker = 0
//
// State: scale f32, growth_tracker i32, found_inf f32, each one element of device memory.
// growth and backoff are f64 arguments; products are formed in f64 and rounded to f32 once,
// as in torch. One thread: the work is three scalars, and keeping it on the device is what
// keeps the training step free of host synchronization.

#include <stdint.h>

// ----------------------------------------------------------------------------
// kernels

extern "C" __global__ void update_scale(float* scale, int32_t* growth_tracker, const float* found_inf,
                                        double growth, double backoff, int32_t growth_interval) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (*found_inf != 0.0f) {
        *scale = (float)(*scale * backoff);
        *growth_tracker = 0;
        return;
    }
    const int32_t successful = *growth_tracker + 1;
    if (successful == growth_interval) {
        const float grown = (float)(*scale * growth);
        if (isfinite(grown)) *scale = grown;
        *growth_tracker = 0;
    } else {
        *growth_tracker = successful;
    }
}
