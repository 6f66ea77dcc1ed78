/* Anonymous memory in huge pages where the kernel allows: the model's weight buffer
 * (model.c), the KV cache (forward.c) and the bandwidth probe's buffer (membw.c) are streamed
 * through, and 4 KiB pages would cost them a TLB miss every 4 KiB and stop the hardware
 * prefetchers at every page boundary. */
#ifndef WYE_ENGINE_HUGEMEM_H
#define WYE_ENGINE_HUGEMEM_H

#include <stdbool.h>
#include <stddef.h>

#define ENG_HUGE_PAGE ((size_t)2 << 20)

struct eng_hugemem {
    unsigned char *p; /* ENG_HUGE_PAGE-aligned, at least the bytes asked for, zeroed */
    void *map;        /* the mapping, for eng_hugemem_free and mprotect */
    size_t map_len;
};

/* Maps at least bytes (> 0) of read-write memory starting on a huge page boundary, advised
 * MADV_HUGEPAGE (advice only: without it, small pages). False when mmap fails. */
bool eng_hugemem_alloc(size_t bytes, struct eng_hugemem *out);
/* Unmaps; a zeroed struct is a no-op. */
void eng_hugemem_free(struct eng_hugemem *h);

#endif
