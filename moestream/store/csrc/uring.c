/* A minimal io_uring ring for aligned reads, through raw syscalls (no liburing needed at build or run time).
 *
 * Ring(entries): io_uring_setup + the three mmaps.
 * ring.queue_read(fd, addr, nbytes, offset, tag) -> bool   one SQE (False when the submission ring is full)
 * ring.submit() -> int                                     io_uring_enter: hand queued SQEs to the kernel
 * ring.wait(min_complete) -> [(tag, result), ...]          block (GIL released) for completions, take them all
 * ring.wake(tag)                                           queue + submit a NOP, so a waiter returns (shutdown)
 *
 * ring.fileno() -> int                                    the ring's fd (tests)
 *
 * One thread submits and one thread waits; the SQ and CQ rings are separate, so that needs no lock here
 * (the Python side serialises submitters). result is bytes read, or -errno.
 *
 * Hostile use is an error, never a crash: fd is -1 until io_uring_setup succeeds (tp_new sets it, so a Ring
 * whose __init__ failed or never ran cannot close fd 0), every method checks it, close() is idempotent and
 * refuses while another thread waits on the ring (its mappings would vanish under it); a read length is a
 * u32 in the SQE, so lengths >= 4 GiB are refused rather than truncated, as are negative offsets. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/io_uring.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_BATCH 256

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, sq_entries;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_ptr, *cq_ptr;
    size_t sq_size, cq_size, sqes_size;
    unsigned queued; /* SQEs written but not yet handed to the kernel */
    int waiters;     /* threads inside wait() (GIL released); close() refuses while > 0 */
} Ring;

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, NULL, 0);
}

static void unmap(Ring *r) {
    if (r->sqes) munmap(r->sqes, r->sqes_size);
    if (r->cq_ptr && r->cq_ptr != r->sq_ptr) munmap(r->cq_ptr, r->cq_size);
    if (r->sq_ptr) munmap(r->sq_ptr, r->sq_size);
    if (r->fd >= 0) close(r->fd);
    r->sqes = NULL; r->cq_ptr = r->sq_ptr = NULL; r->fd = -1;
}

static int map_rings(Ring *r, const struct io_uring_params *p) {
    r->sq_size = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    r->cq_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    const int single = p->features & IORING_FEAT_SINGLE_MMAP;
    if (single && r->cq_size > r->sq_size) r->sq_size = r->cq_size;
    r->sq_ptr = mmap(NULL, r->sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED) { r->sq_ptr = NULL; return -1; }
    r->cq_ptr = single ? r->sq_ptr
                       : mmap(NULL, r->cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
    if (r->cq_ptr == MAP_FAILED) { r->cq_ptr = NULL; return -1; }
    r->sqes_size = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) { r->sqes = NULL; return -1; }
    char *sq = r->sq_ptr, *cq = r->cq_ptr;
    r->sq_head = (unsigned *)(sq + p->sq_off.head); r->sq_tail = (unsigned *)(sq + p->sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p->sq_off.ring_mask); r->sq_array = (unsigned *)(sq + p->sq_off.array);
    r->cq_head = (unsigned *)(cq + p->cq_off.head); r->cq_tail = (unsigned *)(cq + p->cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p->cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
    r->sq_entries = p->sq_entries;
    return 0;
}

static PyObject *Ring_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Ring *r = (Ring *)PyType_GenericNew(type, args, kw);  /* zeroed: every pointer NULL */
    if (r) r->fd = -1;
    return (PyObject *)r;
}

static int is_open(Ring *r) {
    if (r->fd >= 0) return 1;
    PyErr_SetString(PyExc_ValueError, "the io_uring ring is closed (or was never opened)");
    return 0;
}

static int Ring_init(Ring *r, PyObject *args, PyObject *kw) {
    unsigned entries;
    if (!PyArg_ParseTuple(args, "I", &entries)) return -1;
    if (r->fd >= 0) { PyErr_SetString(PyExc_ValueError, "the io_uring ring is already open"); return -1; }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = sys_setup(entries, &p);
    if (r->fd < 0) { PyErr_SetFromErrno(PyExc_OSError); return -1; }
    if (map_rings(r, &p)) { PyErr_SetFromErrno(PyExc_OSError); unmap(r); return -1; }
    return 0;
}

static void Ring_dealloc(Ring *r) {
    unmap(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int push_sqe(Ring *r, int opcode, int fd, unsigned long long addr, unsigned len, unsigned long long off,
                    unsigned long long tag) {
    const unsigned tail = *r->sq_tail, head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (tail - head >= r->sq_entries) return 0;
    const unsigned idx = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = (unsigned char)opcode; sqe->fd = fd; sqe->addr = addr; sqe->len = len; sqe->off = off;
    sqe->user_data = tag;
    r->sq_array[idx] = idx;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    r->queued++;
    return 1;
}

static PyObject *Ring_queue_read(Ring *r, PyObject *args) {
    int fd; unsigned long long addr, tag; long long len, off;  /* signed, so negative values can be refused */
    if (!PyArg_ParseTuple(args, "iKLLK", &fd, &addr, &len, &off, &tag)) return NULL;
    if (!is_open(r)) return NULL;
    if (fd < 0 || off < 0 || len < 0 || len > 0xffffffffLL)
        return PyErr_Format(PyExc_ValueError, "io_uring read of fd %d, %lld bytes at offset %lld: the fd and offset "
                            "must be >= 0 and the length between 0 and 4 GiB - 1 (split larger reads)", fd, len, off);
    return PyBool_FromLong(push_sqe(r, IORING_OP_READ, fd, addr, (unsigned)len, (unsigned long long)off, tag));
}

static int submit_queued(Ring *r) {
    /* hand queued SQEs to the kernel; how many it took, or -errno */
    int done = 0;
    while (r->queued) {
        int n = sys_enter(r->fd, r->queued, 0, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        r->queued -= (unsigned)n; done += n;
        if (n == 0) break;
    }
    return done;
}

static PyObject *Ring_submit(Ring *r, PyObject *noargs) {
    if (!is_open(r)) return NULL;
    const int n = submit_queued(r);
    if (n < 0) { errno = -n; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyLong_FromLong(n);
}

static PyObject *Ring_wake(Ring *r, PyObject *args) {
    unsigned long long tag;
    if (!PyArg_ParseTuple(args, "K", &tag)) return NULL;
    if (!is_open(r)) return NULL;
    /* a full SQ holds reads not yet handed over: hand them over first, so the wake-up finds room */
    int pushed = push_sqe(r, IORING_OP_NOP, -1, 0, 0, 0, tag);
    if (!pushed && submit_queued(r) >= 0) pushed = push_sqe(r, IORING_OP_NOP, -1, 0, 0, 0, tag);
    if (!pushed) Py_RETURN_FALSE;
    return Ring_submit(r, NULL);
}

/* Take up to MAX_BATCH completions, blocking for at least min_complete. */
static int reap(Ring *r, unsigned min_complete, unsigned long long *tags, int *res) {
    int n = 0;
    for (;;) {
        unsigned head = *r->cq_head;
        const unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        while (head != tail && n < MAX_BATCH) {
            const struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
            tags[n] = c->user_data; res[n] = c->res; n++; head++;
        }
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
        if ((unsigned)n >= min_complete || n == MAX_BATCH) return n;
        int rc = sys_enter(r->fd, 0, min_complete - (unsigned)n, IORING_ENTER_GETEVENTS);
        /* completions taken off the ring already are returned; the error shows on the next call */
        if (rc < 0 && errno != EINTR) return n ? n : -errno;
    }
}

static PyObject *Ring_wait(Ring *r, PyObject *args) {
    unsigned min_complete;
    if (!PyArg_ParseTuple(args, "I", &min_complete)) return NULL;
    if (!is_open(r)) return NULL;
    unsigned long long tags[MAX_BATCH]; int res[MAX_BATCH], n;
    r->waiters++;
    Py_BEGIN_ALLOW_THREADS
    n = reap(r, min_complete, tags, res);
    Py_END_ALLOW_THREADS
    r->waiters--;
    if (n < 0) { errno = -n; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *out = PyList_New(n);
    for (int i = 0; out && i < n; i++) PyList_SET_ITEM(out, i, Py_BuildValue("(Ki)", tags[i], res[i]));
    return out;
}

static PyObject *Ring_close(Ring *r, PyObject *noargs) {
    if (r->waiters) {
        PyErr_SetString(PyExc_ValueError, "another thread is waiting on this io_uring ring; wake it before closing");
        return NULL;
    }
    unmap(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_fileno(Ring *r, PyObject *noargs) {
    if (!is_open(r)) return NULL;
    return PyLong_FromLong(r->fd);
}

static PyMethodDef RING_METHODS[] = {
    {"queue_read", (PyCFunction)Ring_queue_read, METH_VARARGS, "queue_read(fd, addr, nbytes, offset, tag) -> bool"},
    {"submit", (PyCFunction)Ring_submit, METH_NOARGS, "hand queued reads to the kernel; returns how many"},
    {"wait", (PyCFunction)Ring_wait, METH_VARARGS, "wait(min_complete) -> [(tag, bytes or -errno)]"},
    {"wake", (PyCFunction)Ring_wake, METH_VARARGS, "wake(tag): submit a no-op that completes with tag"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "release the ring (again: a no-op)"},
    {"fileno", (PyCFunction)Ring_fileno, METH_NOARGS, "the ring's file descriptor"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moestream.store._uring.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Ring_new,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = RING_METHODS,
    .tp_doc = "An io_uring instance for reads (see the module comment).",
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_uring", "io_uring reads for expert streaming", -1, NULL};

PyMODINIT_FUNC PyInit__uring(void) {
    if (PyType_Ready(&RingType) < 0) return NULL;
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0) { Py_DECREF(&RingType); Py_DECREF(m); return NULL; }
    return m;
}
