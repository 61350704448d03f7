/* Python bindings of the attention step (kept beside it, so module.c only lists them): attn_layer checks one
 * layer's fixed arguments once and returns them in a capsule; attn_step takes that capsule, x, out and one tuple per
 * segment, and releases the GIL while it computes. Pointers arrive as ints; kernels/cpu/attention.py checks the
 * tensors behind them. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "attention.h"

#define CAPSULE "moestream.attn_layer"
#define STACK_SEGMENTS 64  /* more segments than this in one step take one PyMem allocation */

static void *ptr(unsigned long long p) { return (void *)(uintptr_t)p; }

static PyObject *attn_error(int rc) {
    if (rc == -1) PyErr_SetString(PyExc_ValueError, "attention: a projection's quant type has no native kernel");
    else if (rc == -2) PyErr_NoMemory();
    else
        PyErr_SetString(PyExc_ValueError, "attention: invalid sizes or segments (segments must cover x's rows in "
                                          "order, 1..16 rows each, fit their caches, with positions >= 0 and "
                                          "no cache twice)");
    return NULL;
}

static void free_layer(PyObject *capsule) { free(PyCapsule_GetPointer(capsule, CAPSULE)); }

static int parse_proj(PyObject *t, attn_proj *p) {
    unsigned long long w, b;
    if (!PyArg_ParseTuple(t, "iKiiK", &p->type, &w, &p->rows, &p->cols, &b)) return -1;
    p->w = ptr(w);
    p->bias = ptr(b);
    return 0;
}

PyObject *py_attn_layer(PyObject *self, PyObject *args) {
    /* (d_model, n_heads, n_kv_heads, head_dim, rope_dim, rope_neox, qk_norm, eps, q_eps, k_eps,
     *  norm, q_norm, k_norm, inv_freq, q, k, v, o) with each projection (type, w, rows, cols, bias) */
    attn_layer L;
    unsigned long long norm, qn, kn, inv;
    PyObject *proj[4];
    if (!PyArg_ParseTuple(args, "iiiiiiifffKKKKO!O!O!O!", &L.d_model, &L.n_heads, &L.n_kv_heads, &L.head_dim,
                          &L.rope_dim, &L.rope_neox, &L.qk_norm, &L.eps, &L.q_eps, &L.k_eps, &norm, &qn, &kn, &inv,
                          &PyTuple_Type, &proj[0], &PyTuple_Type, &proj[1], &PyTuple_Type, &proj[2],
                          &PyTuple_Type, &proj[3]))
        return NULL;
    if (parse_proj(proj[0], &L.q) || parse_proj(proj[1], &L.k) || parse_proj(proj[2], &L.v)
        || parse_proj(proj[3], &L.o))
        return NULL;
    L.norm = ptr(norm); L.q_norm = ptr(qn); L.k_norm = ptr(kn); L.inv_freq = ptr(inv);
    const int rc = attn_layer_check(&L);
    if (rc) return attn_error(rc);
    attn_layer *kept = malloc(sizeof *kept);
    if (!kept) return PyErr_NoMemory();
    *kept = L;
    PyObject *capsule = PyCapsule_New(kept, CAPSULE, free_layer);
    if (!capsule) free(kept);
    return capsule;
}

static int parse_segments(PyObject *seq, attn_segment *segs, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long k, v, pos;
        attn_segment *s = &segs[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KKiiiiK", &k, &v, &s->capacity, &s->n_cached,
                              &s->start, &s->length, &pos))
            return -1;
        s->k = ptr(k); s->v = ptr(v); s->positions = ptr(pos);
    }
    return 0;
}

PyObject *py_attn_step(PyObject *self, PyObject *args) {
    /* (layer capsule, x, n_tokens, segments, out, n_threads); each segment (k, v, capacity, n_cached, start,
     * length, positions) */
    PyObject *capsule, *segments;
    unsigned long long x, out;
    int n_tokens, n_threads;
    if (!PyArg_ParseTuple(args, "OKiOKi", &capsule, &x, &n_tokens, &segments, &out, &n_threads)) return NULL;
    const attn_layer *L = PyCapsule_GetPointer(capsule, CAPSULE);
    if (!L) return NULL;
    PyObject *seq = PySequence_Fast(segments, "attn_step: segments must be a sequence of tuples");
    if (!seq) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    attn_segment stack[STACK_SEGMENTS], *segs = n <= STACK_SEGMENTS ? stack : PyMem_Malloc(sizeof *segs * n);
    int rc = segs ? 0 : -2;
    if (rc == 0 && n > 0x7fffffff) rc = -4;
    if (rc == 0 && parse_segments(seq, segs, n)) rc = -5;  /* Python error already set */
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = attn_step(L, ptr(x), n_tokens, segs, (int)n, ptr(out), n_threads);
        Py_END_ALLOW_THREADS
    }
    if (segs != stack) PyMem_Free(segs);
    Py_DECREF(seq);
    if (rc == -5) return NULL;
    if (rc) return attn_error(rc);
    Py_RETURN_NONE;
}
