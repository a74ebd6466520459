// Happens-before annotations for ThreadSanitizer at the gRPC boundary.
//
// Debian's gRPC is not built with TSan, so TSan cannot see how gRPC orders
// work between its threads. For gRPC's own memory the TSan build suppresses
// reports by frame (tools/sanitizers/tsan.supp). For a reactor's own memory
// it needs the edge gRPC guarantees: everything a reactor did before it
// started an operation (StartRead, StartWrite, Finish) happens before the
// callback that reports the operation (OnReadDone, OnWriteDone, OnDone),
// which may run on another gRPC thread, and before gRPC frees the call after
// OnDone. A reactor calls TsanHandOff(this) right before starting an
// operation and TsanTakeBack(this) first thing in each callback; TakeBack
// also hands off what the calling gRPC thread did before the callback, so
// OnDone on yet another thread is ordered after it. Both compile to nothing
// unless built with -fsanitize=thread.

#ifndef RNNSERVE_COMMON_TSAN_H_
#define RNNSERVE_COMMON_TSAN_H_

#if defined(__SANITIZE_THREAD__)
#define RNNSERVE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RNNSERVE_TSAN 1
#endif
#endif

#ifdef RNNSERVE_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace rnnserve {

inline void TsanHandOff(const void* key) {
#ifdef RNNSERVE_TSAN
  __tsan_release(const_cast<void*>(key));
#else
  (void)key;
#endif
}

inline void TsanTakeBack(const void* key) {
#ifdef RNNSERVE_TSAN
  __tsan_acquire(const_cast<void*>(key));
  __tsan_release(const_cast<void*>(key));
#else
  (void)key;
#endif
}

}  // namespace rnnserve

#endif  // RNNSERVE_COMMON_TSAN_H_
