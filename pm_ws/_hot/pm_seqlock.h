/* The per-row sequence lock of the top-of-book table, shared by the writer (pm_ws._core_c) and the
   reader (pm_ws._shared_c). One writer; any number of readers, in any process, never blocking it.

   A row's SEQ word is the lock: odd while the writer is inside the row, even when done. Memory
   ordering (C11 / GCC __atomic builtins; on x86 every fence below is only a compiler barrier, on
   ARM the release/acquire ones are real barriers, dmb ish):

   writer  pm_row_open:  SEQ = s + 1 (relaxed), then a RELEASE fence: the odd SEQ is ordered before
                         every field store that follows (a reader that sees any new field value
                         and then fences with acquire also sees the odd SEQ).
           ...field stores (plain aligned int64 stores: never torn on a 64-bit target)...
           pm_row_close: SEQ = s + 2 with a RELEASE store: every field store is ordered before it.
   reader  pm_row_read:  s1 = SEQ (ACQUIRE load: the fields read after it are at least as new as
                         the writer's close that wrote s1); retry while s1 is odd; copy the fields
                         (relaxed loads); an ACQUIRE fence orders those loads before the re-read;
                         s2 = SEQ (relaxed); the copy is consistent iff s2 == s1.

   The single writer reads its own rows without any of this (no other thread writes them). */
#ifndef PM_WS_SEQLOCK_H
#define PM_WS_SEQLOCK_H

#include <stdint.h>
#include <string.h>
#include <time.h>

/* Enter a row: SEQ becomes odd. Returns the even SEQ the row had, for pm_row_close. */
static inline int64_t pm_row_open(int64_t* seq) {
    int64_t s = *seq;  /* only this thread writes SEQ */
    __atomic_store_n(seq, s + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return s;
}

/* Leave a row entered at even SEQ s: SEQ becomes s + 2, published after every field store. */
static inline void pm_row_close(int64_t* seq, int64_t s) {
    __atomic_store_n(seq, s + 2, __ATOMIC_RELEASE);
}

/* A release store of one header word (heartbeat, status): readers load it with acquire. */
static inline void pm_store_release(int64_t* word, int64_t value) {
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
}

static inline int64_t pm_load_acquire(const int64_t* word) {
    return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

/* Copy n int64 words of a row under its sequence lock (SEQ at index seq_index). Returns the even
   SEQ of the consistent copy, or -1 after max_tries attempts found the writer inside the row. */
static inline int64_t pm_row_read(const int64_t* row, int64_t* out, int n, int seq_index, long max_tries) {
    long tries;
    int i;
    int64_t s1, s2;
    for (tries = 0; tries < max_tries; tries++) {
        s1 = __atomic_load_n(&row[seq_index], __ATOMIC_ACQUIRE);
        if (s1 & 1) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();  /* the writer is inside: let it finish */
#endif
            continue;
        }
        for (i = 0; i < n; i++)
            out[i] = __atomic_load_n(&row[i], __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        s2 = __atomic_load_n(&row[seq_index], __ATOMIC_RELAXED);
        if (s1 == s2)
            return s1;
    }
    return -1;
}

/* The clock of the writer's heartbeat: CLOCK_MONOTONIC is one clock for every process of a machine
   (Python's time.monotonic_ns on Linux). */
static inline int64_t pm_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
