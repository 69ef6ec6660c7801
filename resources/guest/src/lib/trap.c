/* Exception IDT: every CPU exception ends in a panic line and power-off. */
#include "petrel.h"

struct idt_gate {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

struct idt_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static struct idt_gate idt[32] __attribute__((aligned(16)));
struct idt_ptr idt_desc;

struct trap_frame {
    uint64_t vec, err, rip, cs, rflags, rsp, ss;
};

void idt_init(void)
{
    for (int i = 0; i < 32; i++) {
        uint64_t a = exc_stubs[i];
        idt[i].off_lo = (uint16_t)a;
        idt[i].sel = 0x18;
        idt[i].ist = 0;
        idt[i].type = 0x8E;         /* present, DPL 0, 64-bit interrupt gate */
        idt[i].off_mid = (uint16_t)(a >> 16);
        idt[i].off_hi = (uint32_t)(a >> 32);
        idt[i].zero = 0;
    }
    idt_desc.limit = sizeof(idt) - 1;
    idt_desc.base = (uint64_t)(uintptr_t)idt;
    idt_load();
}

void idt_load(void)
{
    __asm__ volatile("lidt %0" : : "m"(idt_desc));
}

void trap_handler(struct trap_frame *f)
{
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    panic("exception %lu err=0x%lx rip=0x%lx cr2=0x%lx cpu=%u", f->vec, f->err, f->rip, cr2, lapic_id());
}
