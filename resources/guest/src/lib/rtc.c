/* CMOS RTC (ports 0x70/0x71): date/time and NVRAM. */
#include "petrel.h"

uint8_t cmos_read(uint8_t reg)
{
    outb(0x70, reg | 0x80);     /* bit 7: keep NMI disabled */
    return inb(0x71);
}

void cmos_write(uint8_t reg, uint8_t v)
{
    outb(0x70, reg | 0x80);
    outb(0x71, v);
}

bool cmos_present(void)
{
    return !(cmos_read(0x0A) == 0xff && cmos_read(0x0B) == 0xff);
}

struct rtc_raw {
    uint8_t sec, min, hour, day, mon, year, century;
};

static bool read_raw(struct rtc_raw *r)
{
    uint32_t spins = 0;
    while (cmos_read(0x0A) & 0x80)          /* update in progress */
        if (++spins > 100000)
            return false;
    r->sec = cmos_read(0x00);
    r->min = cmos_read(0x02);
    r->hour = cmos_read(0x04);
    r->day = cmos_read(0x07);
    r->mon = cmos_read(0x08);
    r->year = cmos_read(0x09);
    r->century = cmos_read(0x32);
    return true;
}

static unsigned bcd(uint8_t v) { return (v & 0x0f) + (v >> 4) * 10; }

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void rtc_report(void)
{
    if (!cmos_present()) {
        kprintf("rtc: unavailable\n");
        return;
    }
    struct rtc_raw a, b;
    bool stable = false;
    for (int tries = 0; tries < 5 && !stable; tries++) {
        if (!read_raw(&a) || !read_raw(&b))
            break;
        stable = !memcmp(&a, &b, sizeof(a));
    }
    if (!stable) {
        kprintf("rtc: unstable\n");
        return;
    }
    uint8_t regb = cmos_read(0x0B);
    bool binary = regb & 0x04, h24 = regb & 0x02;
    bool pm = a.hour & 0x80;
    uint8_t hr = a.hour & 0x7f;
    unsigned sec = binary ? a.sec : bcd(a.sec);
    unsigned min = binary ? a.min : bcd(a.min);
    unsigned hour = binary ? hr : bcd(hr);
    unsigned day = binary ? a.day : bcd(a.day);
    unsigned mon = binary ? a.mon : bcd(a.mon);
    unsigned yr = binary ? a.year : bcd(a.year);
    unsigned cent = a.century ? (binary ? a.century : bcd(a.century)) : 20;
    if (!h24) {
        if (hour == 12)
            hour = 0;
        if (pm)
            hour += 12;
    }
    unsigned year = cent * 100 + yr;
    int64_t epoch = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    kprintf("rtc: %04u-%02u-%02uT%02u:%02u:%02u epoch=%ld\n", year, mon, day, hour, min, sec, epoch);
}

static uint8_t to_bcd(unsigned v) { return (uint8_t)(((v / 10) << 4) | (v % 10)); }

/*
 * Set the clock: SET (register B bit 7) halts updates while the time
 * registers are written in the encoding register B selects (BCD or binary,
 * 12- or 24-hour), then clearing SET starts the clock from the new time.
 */
COLD void rtc_set(unsigned year, unsigned mon, unsigned day, unsigned hour, unsigned min, unsigned sec)
{
    uint8_t regb = cmos_read(0x0B);
    cmos_write(0x0B, regb | 0x80);
    bool binary = regb & 0x04, h24 = regb & 0x02;
#define ENC(v) (binary ? (uint8_t)(v) : to_bcd(v))
    uint8_t hr;
    if (h24) {
        hr = ENC(hour);
    } else {
        unsigned h12 = hour % 12 ? hour % 12 : 12;
        hr = (uint8_t)(ENC(h12) | (hour >= 12 ? 0x80 : 0));
    }
    /* day of week, 1 = Sunday; 1970-01-01 was a Thursday */
    unsigned wday = (unsigned)((days_from_civil(year, mon, day) % 7 + 11) % 7) + 1;
    cmos_write(0x00, ENC(sec));
    cmos_write(0x02, ENC(min));
    cmos_write(0x04, hr);
    cmos_write(0x06, ENC(wday));
    cmos_write(0x07, ENC(day));
    cmos_write(0x08, ENC(mon));
    cmos_write(0x09, ENC(year % 100));
    cmos_write(0x32, ENC(year / 100));
#undef ENC
    cmos_write(0x0B, regb & 0x7f);
}
