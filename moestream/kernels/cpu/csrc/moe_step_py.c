/* Python bindings of the MoE step (kept beside it, so module.c only lists them): moe_layer checks one layer's fixed
 * arguments once and returns them in a capsule; moe_workspace returns the grow-only buffers (one per model) in
 * another; moe_route and moe_experts take both, release the GIL while they compute, and allocate nothing (a batch's
 * expert list is read into a stack array, STACK_EXPERTS at a time). Pointers arrive as ints;
 * kernels/cpu/moe_step.py checks the tensors behind them. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "moe_step.h"

#define LAYER_CAPSULE "moestream.moe_layer"
#define WS_CAPSULE "moestream.moe_workspace"
#define STACK_EXPERTS 32

static void *ptr(unsigned long long p) { return (void *)(uintptr_t)p; }

static PyObject *moe_error(int rc) {
    if (rc == -1) PyErr_SetString(PyExc_ValueError, "moe step: a weight's quant type has no native kernel");
    else if (rc == -2) PyErr_NoMemory();
    else if (rc == -3)
        PyErr_SetString(PyExc_ValueError, "moe step: gate and up weights need the same activation format");
    else if (rc == -5)
        PyErr_SetString(PyExc_ValueError, "moe step: experts computed without a route of this layer for these tokens");
    else
        PyErr_SetString(PyExc_ValueError, "moe step: invalid sizes (k between 1 and the expert count, columns a "
                                          "multiple of the type's block), an expert index out of range, or out "
                                          "overlapping x");
    return NULL;
}

static void free_layer(PyObject *capsule) { free(PyCapsule_GetPointer(capsule, LAYER_CAPSULE)); }
static void free_ws(PyObject *capsule) { moe_workspace_free(PyCapsule_GetPointer(capsule, WS_CAPSULE)); }

PyObject *py_moe_layer(PyObject *self, PyObject *args) {
    /* (d_model, n_experts, k, normalize, eps, norm, router_type, router, scoring, sel_bias, scale, n_groups,
     *  groups_used, d_ff_shared, shared_gated, shared_gate_inp_type, shared_gate_inp, then type and address of the
     *  shared gate, up and down) */
    moe_layer L;
    unsigned long long norm, bias, w[5];
    if (!PyArg_ParseTuple(args, "iiiifKiKiKfiiiiiKiKiKiK", &L.d_model, &L.n_experts, &L.k, &L.normalize, &L.eps,
                          &norm, &L.router.type, &w[0], &L.scoring, &bias, &L.scale, &L.n_groups, &L.groups_used,
                          &L.d_ff_shared, &L.shared_gated, &L.shared_gate_inp.type, &w[1], &L.shared[0].type, &w[2],
                          &L.shared[1].type, &w[3], &L.shared[2].type, &w[4]))
        return NULL;
    L.norm = ptr(norm);
    L.sel_bias = ptr(bias);
    L.router.w = ptr(w[0]); L.shared_gate_inp.w = ptr(w[1]);
    for (int i = 0; i < 3; i++) L.shared[i].w = ptr(w[2 + i]);
    const int rc = moe_layer_check(&L);
    if (rc) return moe_error(rc);
    moe_layer *kept = malloc(sizeof *kept);
    if (!kept) return PyErr_NoMemory();
    *kept = L;
    PyObject *capsule = PyCapsule_New(kept, LAYER_CAPSULE, free_layer);
    if (!capsule) free(kept);
    return capsule;
}

PyObject *py_moe_workspace(PyObject *self, PyObject *noargs) {
    moe_workspace *ws = moe_workspace_new();
    if (!ws) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(ws, WS_CAPSULE, free_ws);
    if (!capsule) moe_workspace_free(ws);
    return capsule;
}

static int unpack(PyObject *layer, PyObject *ws, moe_layer **L, moe_workspace **W) {
    *L = PyCapsule_GetPointer(layer, LAYER_CAPSULE);
    *W = *L ? PyCapsule_GetPointer(ws, WS_CAPSULE) : NULL;
    return *W ? 0 : -1;
}

PyObject *py_moe_route(PyObject *self, PyObject *args) {
    /* (layer, workspace, x, n_tokens, ids_out or 0, probs_out or 0, n_threads) -> [distinct expert ids] */
    PyObject *layer, *wsobj;
    unsigned long long x, ids, probs;
    int n_tokens, n_threads;
    moe_layer *L;
    moe_workspace *ws;
    if (!PyArg_ParseTuple(args, "OOKiKKi", &layer, &wsobj, &x, &n_tokens, &ids, &probs, &n_threads)) return NULL;
    if (unpack(layer, wsobj, &L, &ws)) return NULL;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = moe_route(L, ws, ptr(x), n_tokens, ptr(ids), ptr(probs), n_threads);
    Py_END_ALLOW_THREADS
    if (n < 0) return moe_error(n);
    PyObject *list = PyList_New(n);  /* the route stays until the next one: only this thread's next call changes it */
    for (int i = 0; list && i < n; i++) {
        PyObject *v = PyLong_FromLong(((const int32_t *)ws->experts.p)[i]);
        if (!v) { Py_CLEAR(list); break; }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static int read_items(PyObject *items, Py_ssize_t first, int n, uint64_t *out) {
    for (int i = 0; i < 4 * n; i++) {
        out[i] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(items, 4 * first + i));
        if (PyErr_Occurred()) return -1;
    }
    return 0;
}

PyObject *py_moe_experts(PyObject *self, PyObject *args) {
    /* (layer, workspace, x, out, n_tokens, gate_type, up_type, down_type, d_ff, items, n_threads) -> True once out
     * is written; items: a list of 4 ints per expert (index into the route's experts, gate, up, down addresses) */
    PyObject *layer, *wsobj, *items;
    unsigned long long x, out;
    int n_tokens, n_threads;
    moe_batch b;
    moe_layer *L;
    moe_workspace *ws;
    if (!PyArg_ParseTuple(args, "OOKKiiiiiO!i", &layer, &wsobj, &x, &out, &n_tokens, &b.gate_type, &b.up_type,
                          &b.down_type, &b.d_ff, &PyList_Type, &items, &n_threads))
        return NULL;
    if (unpack(layer, wsobj, &L, &ws)) return NULL;
    const Py_ssize_t total = PyList_GET_SIZE(items) / 4;
    if (PyList_GET_SIZE(items) % 4) return moe_error(-4);
    uint64_t chunk[4 * STACK_EXPERTS];
    int rc = 0;
    Py_ssize_t first = 0;
    do {  /* an empty list still makes one call: it checks the route, and completes it if nothing is missing */
        b.n = (int)(total - first < STACK_EXPERTS ? total - first : STACK_EXPERTS);
        if (read_items(items, first, b.n, chunk)) return NULL;
        b.items = chunk;
        Py_BEGIN_ALLOW_THREADS
        rc = moe_experts(L, ws, &b, ptr(x), ptr(out), n_tokens, n_threads);
        Py_END_ALLOW_THREADS
        first += b.n;
    } while (rc >= 0 && first < total);
    if (rc < 0) return moe_error(rc);
    return PyBool_FromLong(rc == 1);
}

PyObject *py_moe_workspace_poison(PyObject *self, PyObject *wsobj) {
    /* test only: NaN into every float buffer of the workspace */
    moe_workspace *ws = PyCapsule_GetPointer(wsobj, WS_CAPSULE);
    if (!ws) return NULL;
    moe_workspace_poison(ws);
    Py_RETURN_NONE;
}

PyObject *py_moe_route_export(PyObject *self, PyObject *args) {
    /* (layer, workspace, n_tokens, xn_out, weights_out) -> None; see moe_step.h */
    PyObject *layer, *wsobj;
    unsigned long long xn, weights;
    int n_tokens, rc;
    moe_layer *L;
    moe_workspace *ws;
    if (!PyArg_ParseTuple(args, "OOiKK", &layer, &wsobj, &n_tokens, &xn, &weights)) return NULL;
    if (unpack(layer, wsobj, &L, &ws)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = moe_route_export(L, ws, n_tokens, ptr(xn), ptr(weights));
    Py_END_ALLOW_THREADS
    if (rc < 0) return moe_error(rc);
    Py_RETURN_NONE;
}

PyObject *py_moe_import_rows(PyObject *self, PyObject *args) {
    /* (layer, workspace, n_tokens, groups (int32 address), n_groups, rows (float32 address), n_rows) -> None */
    PyObject *layer, *wsobj;
    unsigned long long groups, rows;
    int n_tokens, n_groups, n_rows, rc;
    moe_layer *L;
    moe_workspace *ws;
    if (!PyArg_ParseTuple(args, "OOiKiKi", &layer, &wsobj, &n_tokens, &groups, &n_groups, &rows, &n_rows)) return NULL;
    if (unpack(layer, wsobj, &L, &ws)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = moe_import_rows(L, ws, n_tokens, ptr(groups), n_groups, ptr(rows), n_rows);
    Py_END_ALLOW_THREADS
    if (rc < 0) return moe_error(rc);
    Py_RETURN_NONE;
}
