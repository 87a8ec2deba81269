// multi_tensor: how the multi-tensor kernels find their work.
//
// Engines whose parameters are separate tensors (PyTorch, most C++ engines) pass lists of
// pointers instead of one flat arena. As in PyTorch's multi_tensor_apply, the list
// travels by value in the kernel's parameter space (no host-to-device copy, so a step
// stays free of synchronization and capturable in a CUDA graph): the launcher cuts every
// tensor into chunks of MT_CHUNK elements and gives each block one chunk, written as
// (tensor index, chunk index). A list longer than one launch can hold is split over
// several launches by the launcher.
//
// Parameter space is 4 KiB on every architecture; each list struct below stays under it
// with room for the scalar arguments.
#pragma once

#include <stdint.h>

// Elements per chunk: 64 Ki, so a block of 256 threads does 256 elements per thread and
// the per-launch overhead is spread over enough work.
#define MT_CHUNK 65536
// Blocks (chunks) one launch carries.
#define MT_MAX_BLOCKS 256

// Per-block work assignment shared by every multi-tensor list.
struct MtBlocks {
    uint16_t tensor[MT_MAX_BLOCKS];  // index into the list's tensors
    uint32_t chunk[MT_MAX_BLOCKS];   // chunk index within that tensor
};

// The [begin, end) element range of this block's chunk, given the tensor's length.
__device__ __forceinline__ void mt_chunk_range(const MtBlocks& b, uint64_t len, uint64_t* begin, uint64_t* end) {
    const uint64_t start = (uint64_t)b.chunk[blockIdx.x] * MT_CHUNK;
    *begin = start;
    *end = start + MT_CHUNK < len ? start + MT_CHUNK : len;
}
