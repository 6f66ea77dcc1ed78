/* Huge-page-aligned anonymous mappings (hugemem.h). */
#include <stdint.h>
#include <sys/mman.h>

#include "local-engine/hugemem.h"

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
    *out = (struct eng_hugemem){.p = p, .map = map, .map_len = len};
    return true;
}

void eng_hugemem_free(struct eng_hugemem *h)
{
    if (h->map) {
        munmap(h->map, h->map_len);
    }
    *h = (struct eng_hugemem){0};
}
