/*
 * Petrel test guest: PVH entry (32-bit protected mode, paging off, EBX =
 * hvm_start_info), static identity page tables, switch to long mode, AP
 * trampoline and exception stubs.
 */

#define MAX_CPUS        256
#define AP_STACK_SHIFT  10
#define BOOT_STACK_SIZE 16384

#define SEL_CODE32 0x08
#define SEL_DATA   0x10
#define SEL_CODE64 0x18

#define CR0_PE  0x00000001
#define CR0_PG  0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100

/* 2 MiB page: present, writable, accessed, dirty, PS. Setting A/D up front
 * spares the CPU (or a shadow MMU) from writing them back later. */
#define PDE_2M     0xE3
#define PDE_2M_UC  0xFB         /* + PWT | PCD */
#define PTE_TABLE  0x23         /* present, writable, accessed */

/* ------------------------------------------------------------------ */
/* Xen ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18) */
        .section .note.Xen, "a", @note
        .balign 4
        .long 4                 /* namesz */
        .long 8                 /* descsz */
        .long 18                /* type */
        .asciz "Xen"
        .balign 4
        .quad _start32
        .balign 4

/* ------------------------------------------------------------------ */
        .section .text.entry, "ax"
        .code32
        .globl _start32
_start32:
        cli
        cld
        movl %ebx, %esi                 /* hvm_start_info, kept for kmain */
        lgdt gdt_desc
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        andl $0x9fffffff, %eax          /* clear CD, NW */
        orl $(CR0_PG | CR0_PE), %eax
        movl %eax, %cr0
        ljmp $SEL_CODE64, $start64

        .code64
start64:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        movq $boot_stack_top, %rsp
        /* zero .bss (small: the big areas live in .nozero) */
        movq $__bss_start, %rdi
        movq $__bss_end, %rcx
        subq %rdi, %rcx
        shrq $3, %rcx
        xorl %eax, %eax
        rep stosq
        movl %esi, %edi
        call kmain
1:      cli
        hlt
        jmp 1b

/* ------------------------------------------------------------------ */
/* AP path, part 2: 32-bit protected mode (entered from the trampoline). */
/* 32-bit protected mode -> long mode on the static page tables; used by the
 * APs and by the BSP waking from S3 (both come from the real-mode trampoline
 * with CS = SEL_CODE32 and the kernel GDT loaded). */
        .macro ENTER_LONG_MODE target64
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        andl $0x9fffffff, %eax
        orl $CR0_PG, %eax
        movl %eax, %cr0
        ljmp $SEL_CODE64, $\target64
        .endm

        .code32
        .globl ap_entry32
ap_entry32:
        ENTER_LONG_MODE ap_entry64

        .code64
ap_entry64:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        movl $1, %eax
        lock xaddl %eax, ap_ticket(%rip)
        cmpl $(MAX_CPUS - 1), %eax
        jae 2f
        movl %eax, %edi                 /* ticket -> ap_main(ticket) */
        incl %eax
        shll $AP_STACK_SHIFT, %eax
        movq $ap_stacks, %rsp
        addq %rax, %rsp
        lidt idt_desc(%rip)
        call ap_main
2:      cli
        hlt
        jmp 2b

/* ------------------------------------------------------------------ */
/* AP path, part 1: real-mode trampoline, copied below 1 MiB. Only the
 * GDTR image is addressed relative to the copy; everything else it jumps
 * to is at fixed kernel addresses. */
        .section .rodata.tramp, "a"
        .code16
        .globl ap_tramp_start, ap_tramp_end, ap_tramp_ljmp_end
ap_tramp_start:
        cli
        cld
        movw %cs, %ax
        movw %ax, %ds
        lgdtl (ap_tramp_gdtr - ap_tramp_start)
        movl %cr0, %eax
        orl $CR0_PE, %eax
        movl %eax, %cr0
        ljmpl $SEL_CODE32, $ap_entry32
ap_tramp_ljmp_end:                      /* the jump's offset is the 6 bytes before: offset32, sel16 */
        .balign 4
ap_tramp_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
ap_tramp_end:

/* ------------------------------------------------------------------ */
/* S3 wake-up (BSP): a copy of the trampoline whose far jump lands here. */
        .section .text
        .code32
        .globl resume_entry32
resume_entry32:
        ENTER_LONG_MODE resume_entry64

        .code64
resume_entry64:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        cld
        /* Copy back the RW state that suspend.c saved just past the image
         * (QEMU reloads a -kernel ELF's segments on every reset, S3 wake-up
         * included): records {u64 dst, u64 len (multiple of 8), data},
         * ended by dst = 0. Nothing in the image is used before this. */
        movq $__kernel_end, %rsi
1:      movq (%rsi), %rdi
        testq %rdi, %rdi
        jz 2f
        movq 8(%rsi), %rcx
        addq $16, %rsi
        shrq $3, %rcx
        rep movsq
        jmp 1b
2:      lidt idt_desc(%rip)
        movq s3_ctx+0(%rip), %rsp
        movq s3_ctx+8(%rip), %rbx
        movq s3_ctx+16(%rip), %rbp
        movq s3_ctx+24(%rip), %r12
        movq s3_ctx+32(%rip), %r13
        movq s3_ctx+40(%rip), %r14
        movq s3_ctx+48(%rip), %r15
        movl $1, %eax
        jmpq *s3_ctx+56(%rip)

/* int s3_save(void): like setjmp. Saves the callee-saved registers, the stack
 * pointer and the return address, returns 0; returns 1 a second time when
 * the machine wakes from S3 (resume_entry64). */
        .globl s3_save
s3_save:
        movq (%rsp), %rax
        leaq 8(%rsp), %rcx
        movq %rcx, s3_ctx+0(%rip)
        movq %rbx, s3_ctx+8(%rip)
        movq %rbp, s3_ctx+16(%rip)
        movq %r12, s3_ctx+24(%rip)
        movq %r13, s3_ctx+32(%rip)
        movq %r14, s3_ctx+40(%rip)
        movq %r15, s3_ctx+48(%rip)
        movq %rax, s3_ctx+56(%rip)
        xorl %eax, %eax
        ret

/* ------------------------------------------------------------------ */
/* Interrupts for the idle scenarios (irq.c). Interrupt gates: IF is clear
 * inside every handler, so they never nest (NMIs aside). */

/* NMI: count it (BSP only: APs run on stacks below boot_stack and just
 * return to their hlt loop). If it arrived between idle_wait's check and its
 * hlt, resume after the hlt so the NMI is reported without waiting for the
 * next interrupt. Touches no register but RAX (saved) and the flags (restored
 * by iretq). */
        .globl nmi_entry
nmi_entry:
        cmpq $boot_stack, %rsp
        jb 2f
        incl nmi_count(%rip)
        pushq %rax
        movq 8(%rsp), %rax              /* interrupted RIP */
        cmpq $idle_win_start, %rax
        jb 1f
        cmpq $idle_win_end, %rax
        jae 1f
        movq $idle_win_end, 8(%rsp)
1:      popq %rax
2:      iretq

/* Maskable interrupts: save the caller-saved registers and call C. The CPU
 * aligned RSP to 16 and pushed 5 qwords; 9 more keep the call aligned. */
        .macro IRQ_STUB name, func
        .globl \name
\name:
        pushq %rax
        pushq %rcx
        pushq %rdx
        pushq %rsi
        pushq %rdi
        pushq %r8
        pushq %r9
        pushq %r10
        pushq %r11
        cld
        call \func
        popq %r11
        popq %r10
        popq %r9
        popq %r8
        popq %rdi
        popq %rsi
        popq %rdx
        popq %rcx
        popq %rax
        iretq
        .endm

        IRQ_STUB irq_default_entry, irq_default
        IRQ_STUB irq_spurious_entry, irq_spurious
        IRQ_STUB irq_sci_entry, irq_sci
        IRQ_STUB irq_virtio_entry, virtio_irq
        IRQ_STUB irq_virtio_config_entry, virtio_config_irq

/* void idle_wait(uint32_t seen): called and returns with IF clear. Sleeps in
 * `sti; hlt` (the STI shadow makes the pair atomic for interrupts) unless
 * nmi_count already differs from `seen`; an NMI inside [idle_win_start,
 * idle_win_end) moves the return point past the hlt. */
        .globl idle_wait
idle_wait:
idle_win_start:
        cmpl nmi_count(%rip), %edi
        jne idle_win_end
        sti
        hlt
idle_win_end:
        cli
        ret

/* ------------------------------------------------------------------ */
/* Exception stubs: push a zero error code where the CPU does not, then
 * the vector, and hand the frame to trap_handler(). */
        .code64
        .section .text
        .macro EXC vec, has_err
exc_\vec:
        .if \has_err == 0
        pushq $0
        .endif
        pushq $\vec
        jmp exc_common
        .endm

        EXC 0,0;  EXC 1,0;  EXC 2,0;  EXC 3,0;  EXC 4,0;  EXC 5,0;  EXC 6,0;  EXC 7,0
        EXC 8,1;  EXC 9,0;  EXC 10,1; EXC 11,1; EXC 12,1; EXC 13,1; EXC 14,1; EXC 15,0
        EXC 16,0; EXC 17,1; EXC 18,0; EXC 19,0; EXC 20,0; EXC 21,1; EXC 22,0; EXC 23,0
        EXC 24,0; EXC 25,0; EXC 26,0; EXC 27,0; EXC 28,0; EXC 29,1; EXC 30,1; EXC 31,0

exc_common:
        movq %rsp, %rdi
        andq $-16, %rsp
        call trap_handler
3:      cli
        hlt
        jmp 3b

        .section .rodata
        .balign 8
        .globl exc_stubs
exc_stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc_\v
        .endr

/* ------------------------------------------------------------------ */
        .section .data
        .balign 16
        .globl gdt, gdt_end
gdt:
        .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: data */
        .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
gdt_end:
        .balign 8
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt

        .balign 4
        .globl ap_ticket
ap_ticket:
        .long 0
        .globl nmi_count
nmi_count:
        .long 0
        .balign 8
s3_ctx:
        .fill 8, 8, 0                   /* rsp, rbx, rbp, r12-r15, rip */

/* Static identity map of the low 4 GiB with 2 MiB pages, so no code has to
 * run to build it. pdpt[4..] is filled at boot for RAM above 4 GiB. The
 * 0xFE000000-0xFFFFFFFF window (IOAPIC, HPET, LAPIC, flash) is uncached. */
        .section .data.pgt, "aw"
        .balign 4096
        .globl pml4, pdpt
pml4:
        .quad pdpt + PTE_TABLE
        .fill 511, 8, 0
pdpt:
        .quad pd_low + PTE_TABLE
        .quad pd_low + 0x1000 + PTE_TABLE
        .quad pd_low + 0x2000 + PTE_TABLE
        .quad pd_low + 0x3000 + PTE_TABLE
        .fill 508, 8, 0
pd_low:
        .set pa, 0
        .rept 2048
        .if pa >= 0xFE000000
        .quad pa + PDE_2M_UC
        .else
        .quad pa + PDE_2M
        .endif
        .set pa, pa + 0x200000
        .endr

/* ------------------------------------------------------------------ */
/* Not zeroed at boot: stacks and page-directory pages (fully written
 * before use). */
        .section .nozero, "aw", @nobits
        .balign 4096
        .globl high_pds, ap_stacks, idt_table, boot_stack, boot_stack_top
high_pds:
        .skip 60 * 4096
idt_table:                              /* 256 gates; trap.c fills 0-31, irq.c the rest */
        .skip 256 * 16
ap_stacks:
        .skip MAX_CPUS << AP_STACK_SHIFT
boot_stack:
        .skip BOOT_STACK_SIZE
boot_stack_top:
        .section .note.GNU-stack, "", @progbits
