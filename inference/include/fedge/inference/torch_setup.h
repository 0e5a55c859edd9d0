// libtorch process set-up. libtorch starts with one intra-op thread unless told,
// so every command that runs a model calls this first.
#pragma once

namespace fedge::inference {

// Number of usable cores (respects the process's CPU affinity mask).
int available_cores();

// Sets libtorch's intra-op threads (and OpenMP's) to `threads`; 0 means all
// available cores. Inter-op threads are set once, to 1, since fedge runs one
// graph at a time per process. Returns the thread count in force.
int setup_torch(int threads = 0);

// For a thread that runs models, at its start. OpenMP's thread count is per
// thread: a new thread starts from OpenMP's default (all cores), not from what
// setup_torch() set on the main thread. threads = 0 applies libtorch's
// process-wide setting to the calling thread; threads > 0 caps only this
// thread's team, so other threads (a trainer's) keep their own count.
void setup_torch_thread(int threads = 0);

}  // namespace fedge::inference
