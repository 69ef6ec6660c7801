/* Kernel command line: space separated key=value words. */
#include "petrel.h"

bool cmdline_get(const char *c, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    bool found = false;
    while (*c) {
        while (*c == ' ' || *c == '\t')
            c++;
        const char *w = c;
        while (*c && *c != ' ' && *c != '\t')
            c++;
        if ((size_t)(c - w) > klen && w[klen] == '=' && memcmp(w, key, klen) == 0) {
            size_t n = (size_t)(c - w) - klen - 1;
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, w + klen + 1, n);
            out[n] = '\0';
            found = true;       /* last occurrence wins */
        }
    }
    return found;
}

uint64_t parse_u64(const char *s, bool *ok)
{
    uint64_t v = 0;
    unsigned base = 10;
    *ok = false;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else if (*s == '_')
            continue;
        else
            return 0;
        v = v * base + d;
    }
    *ok = true;
    return v;
}

/* petrel.* numeric option: false when absent; a bad number panics. */
bool cmdline_u64(const char *key, uint64_t *val)
{
    char buf[32];
    if (!cmdline_get(boot.cmdline, key, buf, sizeof(buf)))
        return false;
    bool ok;
    *val = parse_u64(buf, &ok);
    if (!ok)
        panic("bad %s=%s", key, buf);
    return true;
}
