/* libxenctrl as kexec-tools sees it on a board that runs no Xen hypervisor.
 *
 * Debian links kexec-tools against Xen's libxenctrl, which pulls in six more Xen libraries: 0.6 MB that
 * every boot unpacks from the initramfs (about 6 ms on the instruction clock) for code that only runs in a
 * Xen dom0. kexec-tools calls them only when Xen is there; this library answers as a machine without Xen
 * does: no hypervisor interface (xc_interface_open returns NULL, so kexec-tools' Xen path gives up) and
 * every other call fails. builder/xenshim.py compiles it per architecture (freestanding, no libc) with
 * the symbol version kexec-tools was linked against. */

typedef unsigned long size_t;

void *xc__hypercall_buffer_HYPERCALL_BUFFER_NULL;

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned flags)
{ (void)logger; (void)dombuild_logger; (void)flags; return 0; }
int xc_interface_close(void *xch) { (void)xch; return 0; }
int xc_get_max_cpus(void *xch) { (void)xch; return -1; }
int xc_version(void *xch, int cmd, void *arg) { (void)xch; (void)cmd; (void)arg; return -1; }
void *xc_hypercall_buffer_array_create(void *xch, unsigned n) { (void)xch; (void)n; return 0; }
void xc_hypercall_buffer_array_destroy(void *xch, void *array) { (void)xch; (void)array; }
void *xc__hypercall_buffer_array_alloc(void *xch, void *array, unsigned index, void *hbuf, size_t size)
{ (void)xch; (void)array; (void)index; (void)hbuf; (void)size; return 0; }
int xc_kexec_exec(void *xch, int type) { (void)xch; (void)type; return -1; }
int xc_kexec_get_range(void *xch, int range, int nr, unsigned long *size, unsigned long *start)
{ (void)xch; (void)range; (void)nr; (void)size; (void)start; return -1; }
int xc_kexec_load(void *xch, unsigned char type, unsigned short arch, unsigned long entry, unsigned nr,
                  void *segments)
{ (void)xch; (void)type; (void)arch; (void)entry; (void)nr; (void)segments; return -1; }
int xc_kexec_status(void *xch, int type) { (void)xch; (void)type; return -1; }
int xc_kexec_unload(void *xch, int type) { (void)xch; (void)type; return -1; }
int xc_get_machine_memory_map(void *xch, void *entries, unsigned max_entries)
{ (void)xch; (void)entries; (void)max_entries; return -1; }
