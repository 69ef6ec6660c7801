/* Scenarios selected with petrel.test=: boot, reboot, ioloop, idle, rtcset, suspend, blk,
 * blkbench, blkresize, memfill, netping, netlink, netrx, netdhcp, netblast, balloon. */
#include "petrel.h"

#define CMOS_BOOT_COUNT 0x7e

/* Returns the new boot count (old value + 1), or -1 without CMOS. */
static int boot_count_bump(void)
{
    if (!cmos_present()) {
        kprintf("boot-count: unavailable\n");
        return -1;
    }
    int count = cmos_read(CMOS_BOOT_COUNT) + 1;
    cmos_write(CMOS_BOOT_COUNT, (uint8_t)count);
    kprintf("boot-count: %d\n", count);
    return count;
}

static void boot_count_clear(int count)
{
    if (count >= 0)
        cmos_write(CMOS_BOOT_COUNT, 0);
}

static void run_reboot(int count)
{
    char method[16];
    if (!cmdline_get(boot.cmdline, "petrel.reset", method, sizeof(method)))
        memcpy(method, "acpi", 5);
    if (memcmp(method, "kbd", 4) && memcmp(method, "acpi", 5) && memcmp(method, "cf9", 4))
        panic("unknown petrel.reset=%s", method);
    if (count < 0)
        panic("reboot scenario needs the CMOS boot counter");
    if (count >= 2) {
        boot_count_clear(count);
        return;
    }
    kprintf("reboot: via %s\n", method);
    reset_system(method);
    panic("reset via %s did not happen", method);
}

static void run_ioloop(void)
{
    char buf[32];
    uint64_t iters = 1000000;
    if (cmdline_get(boot.cmdline, "petrel.iters", buf, sizeof(buf))) {
        bool ok;
        iters = parse_u64(buf, &ok);
        if (!ok)
            panic("bad petrel.iters=%s", buf);
    }
    kprintf("ioloop: start iters=%lu\n", iters);
    for (uint64_t i = 0; i < iters; i++)
        outb(0x80, (uint8_t)i);
    kprintf("ioloop: end\n");
}

/* Sets the clock to a fixed time in 2030, then reports it like the boot check. */
static COLD void run_rtcset(void)
{
    if (!cmos_present()) {
        kprintf("rtc: set unavailable\n");
        return;
    }
    rtc_set(2030, 1, 2, 3, 4, 5);
    kprintf("rtc: set 2030-01-02T03:04:05\n");
    rtc_report();
}

bool scenario_run(const char *name)
{
    bool is_boot = !memcmp(name, "boot", 5);
    bool is_reboot = !memcmp(name, "reboot", 7);
    bool is_ioloop = !memcmp(name, "ioloop", 7);
    bool is_idle = !memcmp(name, "idle", 5);
    bool is_rtcset = !memcmp(name, "rtcset", 7);
    bool is_suspend = !memcmp(name, "suspend", 8);
    bool is_blk = !memcmp(name, "blk", 4);
    bool is_blkbench = !memcmp(name, "blkbench", 9);
    bool is_blkresize = !memcmp(name, "blkresize", 10);
    bool is_memfill = !memcmp(name, "memfill", 8);
    bool is_balloon = !memcmp(name, "balloon", 8);
    static const struct { const char *name; bool (*run)(void); } net_scenarios[] = {
        { "netping", netping_run }, { "netlink", netlink_run }, { "netrx", netrx_run },
        { "netdhcp", netdhcp_run }, { "netblast", netblast_run },
    };
    bool (*net_run)(void) = NULL;
    for (unsigned i = 0; i < ARRAY_LEN(net_scenarios); i++)
        if (!memcmp(name, net_scenarios[i].name, strlen(net_scenarios[i].name) + 1))
            net_run = net_scenarios[i].run;
    if (!is_boot && !is_reboot && !is_ioloop && !is_idle && !is_rtcset && !is_suspend && !is_blk &&
        !is_blkbench && !is_blkresize && !is_memfill && !net_run && !is_balloon)
        panic("unknown petrel.test=%s", name);

    int count = boot_count_bump();
    if (is_reboot) {
        run_reboot(count);
        return true;
    }
    boot_count_clear(count);
    if (is_ioloop)
        run_ioloop();
    if (is_rtcset)
        run_rtcset();
    if (is_suspend)
        suspend_run();          /* goes on like idle */
    else if (is_idle || is_rtcset)
        idle_run();             /* returns after the power button */
    if (is_blk)
        return blk_run();
    if (is_blkbench)
        return blkbench_run();
    if (is_blkresize)
        return blkresize_run();
    if (is_memfill)
        memfill_run();
    if (is_balloon)
        return balloon_run();
    if (net_run)
        return net_run();
    return true;
}
