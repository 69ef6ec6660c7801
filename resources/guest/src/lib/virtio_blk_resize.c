/*
 * The `blkresize` scenario: set up the disk with configuration changes on
 * their own MSI-X vector, sleep until the VMM signals one (e.g. QMP
 * block_resize), re-read the capacity and read the new last sector.
 */
#include "petrel.h"

#define ISR_CONFIG      2

static uint8_t sector[512] __attribute__((section(".nozero"), aligned(512)));

/* Has a configuration change been signalled since the snapshot? */
static bool config_changed(uint32_t cfg0, uint32_t irq0, uint8_t gen0)
{
    if (vblk.config_irq)
        return virtio_config_irq_count != cfg0;
    if (vblk.msix)
        return virtio_irq_count != irq0;    /* shared vector; the queue is idle */
    return (virtio_isr(&vblk) & ISR_CONFIG) || virtio_config_generation(&vblk) != gen0;
}

COLD bool blkresize_run(void)
{
    blk_set_timeout();
    struct blk_geom g;
    if (!blk_open(16, true, &g))
        return false;

    uint8_t gen0 = virtio_config_generation(&vblk);
    uint32_t cfg0 = virtio_config_irq_count, irq0 = virtio_irq_count;
    kprintf("blkresize: waiting\n");
    virtio_watchdog(&vblk, true);
    timer_start_us(vblk.timeout_us);
    bool changed;
    while (!(changed = config_changed(cfg0, irq0, gen0)) && !timer_expired())
        if (vblk.msix)
            virtio_sleep();
    virtio_watchdog(&vblk, false);

    bool ok = false;
    uint64_t cap = blk_read_capacity();
    uint8_t gen = virtio_config_generation(&vblk);
    if (!changed && gen != gen0) {
        kprintf("blkresize: FAILED no interrupt capacity=%lu generation=%u\n", cap, gen);
    } else if (!changed) {
        kprintf("blkresize: FAILED timeout\n");
    } else {
        kprintf("blkresize: capacity=%lu generation=%u\n", cap, gen);
        int st = cap ? blk_req(BLK_T_IN, cap - 1, sector, 512) : 0xfe;
        ok = st == 0;
        if (ok)
            kprintf("blkresize: read last ok\n");
        else if (st < 0)
            kprintf("blkresize: read last FAILED timeout\n");
        else
            kprintf("blkresize: read last FAILED status=%d\n", st);
    }
    virtio_quiesce(&vblk);
    return ok;
}
