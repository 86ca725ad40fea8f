/* _bankboot: the few C calls the init and bankctl need that Python's own modules lack, built into the lean
 * libpython (builder/leanpython.py compiles this file for the target and adds it to _PyImport_Inittab).
 *
 * Why not ctypes: ctypes is 12 million instructions to import (its Python half, _ctypes and libffi), and
 * PyInstaller's bootstrap imports it at every start of a bundle that carries it; with the calls here the
 * freeze carries no ctypes, _ctypes or libffi at all. What is here is what the init and bankctl called
 * through ctypes, and no more:
 *   - system calls: mount, umount2, finit_module, kexec_file_load, reboot, syncfs. Each returns 0 or the errno
 *     (initfs/syscalls.py words the error, naming what failed);
 *   - dlopen with RTLD_GLOBAL (the TLS piece's OpenSSL, so `_ssl` finds it by soname);
 *   - libsodium's ed25519 signatures, X25519 sealed boxes and XChaCha20-Poly1305, looked up with dlsym
 *     from a libsodium opened on demand (open_sodium): a boot that checks no signature never maps it, and
 *     libpython gains no DT_NEEDED entry. No crypto is written here, only argument checks and the calls.
 * The same API, for a build host's Python (which has no _bankboot), is overlay_layout/hostnative.py. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sizes from libsodium's headers (stable ABI constants; the Python side checks them too). */
#define SIGN_PUBLIC 32
#define SIGN_SECRET 64
#define SIGN_SEED 32
#define SIGN_BYTES 64
#define BOX_PUBLIC 32
#define BOX_SECRET 32
#define BOX_SEED 32
#define SEAL_BYTES 48
#define AEAD_KEY 32
#define AEAD_NONCE 24
#define AEAD_TAG 16

typedef unsigned long long ull;
typedef unsigned char uc;

/* --- system calls --- */

/* A path argument: str or bytes (os.fsencode's rules), or None when `optional`. *out is NULL for None. */
static int path_arg(PyObject *obj, PyObject **out, int optional)
{
    *out = NULL;
    if (obj == Py_None && optional)
        return 1;
    return PyUnicode_FSConverter(obj, out);
}

static const char *path_of(PyObject *b) { return b ? PyBytes_AS_STRING(b) : NULL; }

static PyObject *result(int rc) { return PyLong_FromLong(rc == 0 ? 0 : errno); }

static PyObject *bb_mount(PyObject *self, PyObject *args)
{
    PyObject *o[4], *p[4] = {NULL, NULL, NULL, NULL}, *ret = NULL;
    unsigned long flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOkO:mount", &o[0], &o[1], &o[2], &flags, &o[3]))
        return NULL;
    for (int i = 0; i < 4; i++)
        if (!path_arg(o[i], &p[i], i >= 2))
            goto out;
    ret = result(mount(path_of(p[0]), path_of(p[1]), path_of(p[2]), flags, path_of(p[3])));
out:
    for (int i = 0; i < 4; i++)
        Py_XDECREF(p[i]);
    return ret;
}

static PyObject *bb_umount2(PyObject *self, PyObject *args)
{
    PyObject *o, *p, *ret;
    int flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi:umount2", &o, &flags) || !path_arg(o, &p, 0))
        return NULL;
    ret = result(umount2(PyBytes_AS_STRING(p), flags));
    Py_DECREF(p);
    return ret;
}

static PyObject *bb_finit_module(PyObject *self, PyObject *args)
{
    int fd, flags;
    const char *params;
    (void)self;
    if (!PyArg_ParseTuple(args, "isi:finit_module", &fd, &params, &flags))
        return NULL;
    return result((int)syscall(SYS_finit_module, fd, params, flags));
}

static PyObject *bb_kexec_file_load(PyObject *self, PyObject *args)
{
    int kernel_fd, initrd_fd;
    const char *cmdline;
    Py_ssize_t len;
    unsigned long flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "iis#k:kexec_file_load", &kernel_fd, &initrd_fd, &cmdline, &len, &flags))
        return NULL;
#ifdef SYS_kexec_file_load
    /* The length counts the terminating NUL, as kexec_file_load(2) wants. */
    return result((int)syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, (unsigned long)len + 1, cmdline, flags));
#else
    (void)kernel_fd; (void)initrd_fd; (void)cmdline; (void)len; (void)flags;
    return PyLong_FromLong(ENOSYS);
#endif
}

static PyObject *bb_reboot(PyObject *self, PyObject *args)
{
    int cmd;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:reboot", &cmd))
        return NULL;
    return result(reboot(cmd));
}

static PyObject *bb_syncfs(PyObject *self, PyObject *args)
{
    int fd;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:syncfs", &fd))
        return NULL;
    return result(syncfs(fd));
}

static PyObject *bb_load_global(PyObject *self, PyObject *args)
{
    PyObject *o, *p;
    void *handle;
    (void)self;
    if (!PyArg_ParseTuple(args, "O:load_global", &o) || !path_arg(o, &p, 0))
        return NULL;
    handle = dlopen(PyBytes_AS_STRING(p), RTLD_NOW | RTLD_GLOBAL);  /* kept for the life of the process */
    Py_DECREF(p);
    if (handle == NULL) {
        const char *why = dlerror();
        PyErr_SetString(PyExc_OSError, why ? why : "dlopen failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* --- libsodium --- */

static struct {
    void *handle;
    int (*sign_verify_detached)(const uc *, const uc *, ull, const uc *);
    int (*sign_seed_keypair)(uc *, uc *, const uc *);
    int (*sign_detached)(uc *, ull *, const uc *, ull, const uc *);
    int (*box_seed_keypair)(uc *, uc *, const uc *);
    int (*box_seal)(uc *, const uc *, ull, const uc *);
    int (*box_seal_open)(uc *, const uc *, ull, const uc *, const uc *);
    int (*aead_encrypt)(uc *, ull *, const uc *, ull, const uc *, ull, const uc *, const uc *, const uc *);
    int (*aead_decrypt)(uc *, ull *, uc *, const uc *, ull, const uc *, ull, const uc *, const uc *);
} sodium;

static const struct { const char *name; size_t offset; } sodium_symbols[] = {
    {"crypto_sign_verify_detached", offsetof(__typeof__(sodium), sign_verify_detached)},
    {"crypto_sign_seed_keypair", offsetof(__typeof__(sodium), sign_seed_keypair)},
    {"crypto_sign_detached", offsetof(__typeof__(sodium), sign_detached)},
    {"crypto_box_seed_keypair", offsetof(__typeof__(sodium), box_seed_keypair)},
    {"crypto_box_seal", offsetof(__typeof__(sodium), box_seal)},
    {"crypto_box_seal_open", offsetof(__typeof__(sodium), box_seal_open)},
    {"crypto_aead_xchacha20poly1305_ietf_encrypt", offsetof(__typeof__(sodium), aead_encrypt)},
    {"crypto_aead_xchacha20poly1305_ietf_decrypt", offsetof(__typeof__(sodium), aead_decrypt)},
};

static PyObject *bb_open_sodium(PyObject *self, PyObject *args)
{
    PyObject *o, *p;
    void *handle;
    int (*init)(void);
    (void)self;
    if (!PyArg_ParseTuple(args, "O:open_sodium", &o))
        return NULL;
    if (sodium.handle != NULL)
        Py_RETURN_NONE;
    if (!path_arg(o, &p, 0))
        return NULL;
    handle = dlopen(PyBytes_AS_STRING(p), RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *why = dlerror();
        PyErr_SetString(PyExc_OSError, why ? why : "dlopen failed");
        Py_DECREF(p);
        return NULL;
    }
    for (size_t i = 0; i < sizeof sodium_symbols / sizeof sodium_symbols[0]; i++) {
        void *fn = dlsym(handle, sodium_symbols[i].name);
        if (fn == NULL) {
            PyErr_Format(PyExc_OSError, "%s has no %s (not libsodium 1.0.12 or later)", PyBytes_AS_STRING(p),
                         sodium_symbols[i].name);
            dlclose(handle);
            Py_DECREF(p);
            return NULL;
        }
        memcpy((char *)&sodium + sodium_symbols[i].offset, &fn, sizeof fn);
    }
    init = (int (*)(void))dlsym(handle, "sodium_init");
    if (init == NULL || init() < 0) {
        PyErr_Format(PyExc_OSError, "%s: sodium_init() failed", PyBytes_AS_STRING(p));
        dlclose(handle);
        Py_DECREF(p);
        return NULL;
    }
    Py_DECREF(p);
    sodium.handle = handle;
    Py_RETURN_NONE;
}

static int sodium_ready(void)
{
    if (sodium.handle == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libsodium is not open (call open_sodium first)");
        return 0;
    }
    return 1;
}

/* Buffers of a fixed size: a wrong one is the caller's bug, and C must never read past it. */
static int sized(Py_buffer *b, Py_ssize_t size, const char *what)
{
    if (b->len != size) {
        PyErr_Format(PyExc_ValueError, "%s is %zd bytes, not %zd", what, b->len, size);
        return 0;
    }
    return 1;
}

static void release(Py_buffer *bufs, int n)
{
    for (int i = 0; i < n; i++)
        if (bufs[i].obj != NULL)
            PyBuffer_Release(&bufs[i]);
}

static PyObject *bb_sign_verify(PyObject *self, PyObject *args)
{
    Py_buffer b[3] = {{0}};  /* public, message, signature */
    PyObject *ret = NULL;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*y*:sign_verify", &b[0], &b[1], &b[2]))
        return NULL;
    if (sized(&b[0], SIGN_PUBLIC, "the public key") && sized(&b[2], SIGN_BYTES, "the signature"))
        ret = PyBool_FromLong(sodium.sign_verify_detached(b[2].buf, b[1].buf, (ull)b[1].len, b[0].buf) == 0);
    release(b, 3);
    return ret;
}

/* (public, secret) made from a seed by one of libsodium's seed_keypair calls. */
static PyObject *keypair(PyObject *args, int (*make)(uc *, uc *, const uc *), Py_ssize_t pk_size,
                         Py_ssize_t sk_size, const char *fmt)
{
    Py_buffer seed = {0};
    PyObject *pk = NULL, *sk = NULL;
    if (!sodium_ready() || !PyArg_ParseTuple(args, fmt, &seed))
        return NULL;
    if (!sized(&seed, SIGN_SEED, "the seed"))
        goto fail;
    pk = PyBytes_FromStringAndSize(NULL, pk_size);
    sk = PyBytes_FromStringAndSize(NULL, sk_size);
    if (pk == NULL || sk == NULL)
        goto fail;
    if (make((uc *)PyBytes_AS_STRING(pk), (uc *)PyBytes_AS_STRING(sk), seed.buf) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "libsodium refused to make a key pair");
        goto fail;
    }
    PyBuffer_Release(&seed);
    return Py_BuildValue("(NN)", pk, sk);
fail:
    Py_XDECREF(pk);
    Py_XDECREF(sk);
    release(&seed, 1);
    return NULL;
}

static PyObject *bb_sign_keypair(PyObject *self, PyObject *args)
{
    (void)self;
    return sodium_ready() ? keypair(args, sodium.sign_seed_keypair, SIGN_PUBLIC, SIGN_SECRET, "y*:sign_keypair")
                          : NULL;
}

static PyObject *bb_box_keypair(PyObject *self, PyObject *args)
{
    (void)self;
    return sodium_ready() ? keypair(args, sodium.box_seed_keypair, BOX_PUBLIC, BOX_SECRET, "y*:box_keypair") : NULL;
}

static PyObject *bb_sign(PyObject *self, PyObject *args)
{
    Py_buffer b[2] = {{0}};  /* message, secret */
    PyObject *sig = NULL;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*:sign", &b[0], &b[1]))
        return NULL;
    if (sized(&b[1], SIGN_SECRET, "the secret key") && (sig = PyBytes_FromStringAndSize(NULL, SIGN_BYTES)) != NULL
        && sodium.sign_detached((uc *)PyBytes_AS_STRING(sig), NULL, b[0].buf, (ull)b[0].len, b[1].buf) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "crypto_sign_detached failed");
        Py_CLEAR(sig);
    }
    release(b, 2);
    return sig;
}

static PyObject *bb_box_seal(PyObject *self, PyObject *args)
{
    Py_buffer b[2] = {{0}};  /* message, public */
    PyObject *box = NULL;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*:box_seal", &b[0], &b[1]))
        return NULL;
    if (sized(&b[1], BOX_PUBLIC, "the public key")
        && (box = PyBytes_FromStringAndSize(NULL, b[0].len + SEAL_BYTES)) != NULL
        && sodium.box_seal((uc *)PyBytes_AS_STRING(box), b[0].buf, (ull)b[0].len, b[1].buf) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "crypto_box_seal failed");
        Py_CLEAR(box);
    }
    release(b, 2);
    return box;
}

/* The message of a sealed box, or None when this key pair cannot open it. */
static PyObject *bb_box_seal_open(PyObject *self, PyObject *args)
{
    Py_buffer b[3] = {{0}};  /* box, public, secret */
    PyObject *msg = NULL;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*y*:box_seal_open", &b[0], &b[1], &b[2]))
        return NULL;
    if (sized(&b[1], BOX_PUBLIC, "the public key") && sized(&b[2], BOX_SECRET, "the secret key")) {
        if (b[0].len < SEAL_BYTES) {
            msg = Py_NewRef(Py_None);
        } else if ((msg = PyBytes_FromStringAndSize(NULL, b[0].len - SEAL_BYTES)) != NULL
                   && sodium.box_seal_open((uc *)PyBytes_AS_STRING(msg), b[0].buf, (ull)b[0].len, b[1].buf,
                                           b[2].buf) != 0) {
            Py_SETREF(msg, Py_NewRef(Py_None));
        }
    }
    release(b, 3);
    return msg;
}

static PyObject *bb_aead_encrypt(PyObject *self, PyObject *args)
{
    Py_buffer b[4] = {{0}};  /* message, additional data, nonce, key */
    PyObject *out = NULL;
    ull size = 0;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*y*y*:aead_encrypt", &b[0], &b[1], &b[2], &b[3]))
        return NULL;
    if (sized(&b[2], AEAD_NONCE, "the nonce") && sized(&b[3], AEAD_KEY, "the key")
        && (out = PyBytes_FromStringAndSize(NULL, b[0].len + AEAD_TAG)) != NULL
        && (sodium.aead_encrypt((uc *)PyBytes_AS_STRING(out), &size, b[0].buf, (ull)b[0].len, b[1].buf,
                                (ull)b[1].len, NULL, b[2].buf, b[3].buf) != 0
            || size != (ull)b[0].len + AEAD_TAG)) {
        PyErr_SetString(PyExc_RuntimeError, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
        Py_CLEAR(out);
    }
    release(b, 4);
    return out;
}

/* The plaintext, or None when the tag does not match. */
static PyObject *bb_aead_decrypt(PyObject *self, PyObject *args)
{
    Py_buffer b[4] = {{0}};  /* box, additional data, nonce, key */
    PyObject *out = NULL;
    ull size = 0;
    (void)self;
    if (!sodium_ready() || !PyArg_ParseTuple(args, "y*y*y*y*:aead_decrypt", &b[0], &b[1], &b[2], &b[3]))
        return NULL;
    if (sized(&b[2], AEAD_NONCE, "the nonce") && sized(&b[3], AEAD_KEY, "the key")) {
        if (b[0].len < AEAD_TAG) {
            out = Py_NewRef(Py_None);
        } else if ((out = PyBytes_FromStringAndSize(NULL, b[0].len - AEAD_TAG)) != NULL
                   && (sodium.aead_decrypt((uc *)PyBytes_AS_STRING(out), &size, NULL, b[0].buf, (ull)b[0].len,
                                           b[1].buf, (ull)b[1].len, b[2].buf, b[3].buf) != 0
                       || size != (ull)(b[0].len - AEAD_TAG))) {
            Py_SETREF(out, Py_NewRef(Py_None));
        }
    }
    release(b, 4);
    return out;
}

static PyMethodDef methods[] = {
    {"mount", bb_mount, METH_VARARGS, "mount(source, target, fstype|None, flags, data|None) -> errno or 0"},
    {"umount2", bb_umount2, METH_VARARGS, "umount2(target, flags) -> errno or 0"},
    {"finit_module", bb_finit_module, METH_VARARGS, "finit_module(fd, params, flags) -> errno or 0"},
    {"kexec_file_load", bb_kexec_file_load, METH_VARARGS,
     "kexec_file_load(kernel_fd, initrd_fd, cmdline, flags) -> errno or 0 (ENOSYS where there is none)"},
    {"reboot", bb_reboot, METH_VARARGS, "reboot(cmd) -> errno (it returns only when it failed)"},
    {"syncfs", bb_syncfs, METH_VARARGS, "syncfs(fd) -> errno or 0"},
    {"load_global", bb_load_global, METH_VARARGS, "load_global(path): dlopen with RTLD_GLOBAL; OSError names why"},
    {"open_sodium", bb_open_sodium, METH_VARARGS, "open_sodium(path): load libsodium once; OSError names why"},
    {"sign_verify", bb_sign_verify, METH_VARARGS, "sign_verify(public, message, signature) -> bool"},
    {"sign_keypair", bb_sign_keypair, METH_VARARGS, "sign_keypair(seed) -> (public, secret)"},
    {"sign", bb_sign, METH_VARARGS, "sign(message, secret) -> signature"},
    {"box_keypair", bb_box_keypair, METH_VARARGS, "box_keypair(seed) -> (public, secret)"},
    {"box_seal", bb_box_seal, METH_VARARGS, "box_seal(message, public) -> sealed box"},
    {"box_seal_open", bb_box_seal_open, METH_VARARGS, "box_seal_open(box, public, secret) -> message or None"},
    {"aead_encrypt", bb_aead_encrypt, METH_VARARGS, "aead_encrypt(message, ad, nonce, key) -> ciphertext + tag"},
    {"aead_decrypt", bb_aead_decrypt, METH_VARARGS, "aead_decrypt(box, ad, nonce, key) -> plaintext or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bankboot", "bankboot's system and libsodium calls (builder/bankbootmodule.c)", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bankboot(void) { return PyModule_Create(&module); }
