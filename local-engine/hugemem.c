/* Huge-page-aligned anonymous mappings (hugemem.h). Under AddressSanitizer the mapping's
 * slack before and after the bytes asked for is poisoned, so an access just past a KV cache
 * or the weights is reported as an overflow, as it would be for a malloc'd block. */
#include <stdint.h>
#include <sys/mman.h>

#include "common/alloc.h" /* WYE_ASAN */
#include "local-engine/hugemem.h"

#ifdef WYE_ASAN
#include <sanitizer/asan_interface.h>
#endif

bool eng_hugemem_alloc(size_t bytes, struct eng_hugemem *out)
{
    *out = (struct eng_hugemem){0};
    /* one huge page more than needed, to start on a huge page boundary */
    size_t len = (bytes + ENG_HUGE_PAGE - 1) / ENG_HUGE_PAGE * ENG_HUGE_PAGE + ENG_HUGE_PAGE;
    if (bytes == 0 || len < bytes) {
        return false;
    }
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        return false;
    }
    unsigned char *p =
        (unsigned char *)(((uintptr_t)map + ENG_HUGE_PAGE - 1) & ~(uintptr_t)(ENG_HUGE_PAGE - 1));
    (void)madvise(p, len - (size_t)(p - (unsigned char *)map), MADV_HUGEPAGE); /* advice only */
#ifdef WYE_ASAN
    size_t head = (size_t)(p - (unsigned char *)map);
    ASAN_POISON_MEMORY_REGION(map, head);
    ASAN_POISON_MEMORY_REGION(p + bytes, len - head - bytes);
#endif
    *out = (struct eng_hugemem){.p = p, .map = map, .map_len = len};
    return true;
}

void eng_hugemem_free(struct eng_hugemem *h)
{
    if (h->map) {
#ifdef WYE_ASAN
        ASAN_UNPOISON_MEMORY_REGION(h->map, h->map_len); /* the addresses may be mapped again */
#endif
        munmap(h->map, h->map_len);
    }
    *h = (struct eng_hugemem){0};
}
