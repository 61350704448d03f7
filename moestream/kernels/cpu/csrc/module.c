/* Python bindings (plain C API, no PyTorch): tensors arrive as data pointers (ints) with their sizes;
 * the Python wrapper checks dtypes, shapes, contiguity, byte sizes and array lengths, and the kernels check sizes,
 * offsets and row indices themselves (the wrapper relies on that; see kernels/cpu/__init__.py). Every call
 * releases the GIL while it computes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kernels.h"
#include "matmul.h"
#include "moe.h"
#include "threadpool.h"

PyObject *py_attn_layer(PyObject *self, PyObject *args); /* attention_py.c */
PyObject *py_attn_step(PyObject *self, PyObject *args);
PyObject *py_moe_layer(PyObject *self, PyObject *args); /* moe_step_py.c */
PyObject *py_moe_workspace(PyObject *self, PyObject *noargs);
PyObject *py_moe_route(PyObject *self, PyObject *args);
PyObject *py_moe_experts(PyObject *self, PyObject *args);
PyObject *py_moe_route_export(PyObject *self, PyObject *args);
PyObject *py_moe_import_rows(PyObject *self, PyObject *args);
PyObject *py_moe_workspace_poison(PyObject *self, PyObject *ws);

static void *ptr(unsigned long long p) { return (void *)(uintptr_t)p; }

static PyObject *err(int rc) {
    /* ValueError; the Python wrapper turns a refused offset or row into a KernelInputError naming the value */
    if (rc == -1) PyErr_SetString(PyExc_ValueError, "unsupported quant type for the native kernels");
    else if (rc == -2) PyErr_NoMemory();
    else if (rc == -3) PyErr_SetString(PyExc_ValueError, "gate and up weights need the same activation format");
    else if (rc == -4)
        PyErr_SetString(PyExc_ValueError, "invalid sizes for the native kernel: rows and columns must be > 0 and "
                                          "columns a multiple of the type's block; offsets rising from 0, rows in range");
    else PyErr_Format(PyExc_ValueError, "native kernel failed (code %d)", rc);
    return NULL;
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    int type, n_rows, n_cols, n_tokens, n_threads;
    unsigned long long w, x, y;
    if (!PyArg_ParseTuple(args, "iKiiKiKi", &type, &w, &n_rows, &n_cols, &x, &n_tokens, &y, &n_threads)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = matmul(type, ptr(w), n_rows, n_cols, ptr(x), n_tokens, ptr(y), n_threads);
    Py_END_ALLOW_THREADS
    if (rc) return err(rc);
    Py_RETURN_NONE;
}

static PyObject *py_matmul_heads(PyObject *self, PyObject *args) {
    int type, n_heads, n_rows, n_cols, n_tokens, n_threads;
    unsigned long long w, x, y;
    if (!PyArg_ParseTuple(args, "iKiiiKiKi", &type, &w, &n_heads, &n_rows, &n_cols, &x, &n_tokens, &y, &n_threads))
        return NULL;
    if (n_tokens > 0 && n_heads > 0 && n_tokens > INT_MAX / n_heads) {
        PyErr_SetString(PyExc_OverflowError, "n_tokens x n_heads overflows");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = matmul_heads(type, ptr(w), n_heads, n_rows, n_cols, ptr(x), n_tokens, ptr(y), n_threads);
    Py_END_ALLOW_THREADS
    if (rc) return err(rc);
    Py_RETURN_NONE;
}

static PyObject *py_moe_ffn(PyObject *self, PyObject *args) {
    moe_args a;
    unsigned long long x, gate, up, down, offsets, tokens, weights, out;
    if (!PyArg_ParseTuple(args, "KiiiiiiiKKKKKKKi", &x, &a.n_tokens, &a.d_model, &a.d_ff, &a.gate_type, &a.up_type,
                          &a.down_type, &a.n_experts, &gate, &up, &down, &offsets, &tokens, &weights, &out,
                          &a.n_threads))
        return NULL;
    a.x = ptr(x); a.gate = ptr(gate); a.up = ptr(up); a.down = ptr(down);
    a.offsets = ptr(offsets); a.tokens = ptr(tokens); a.weights = ptr(weights); a.out = ptr(out);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = moe_ffn(&a);
    Py_END_ALLOW_THREADS
    if (rc) return err(rc);
    Py_RETURN_NONE;
}

static PyObject *py_pack_rows8(PyObject *self, PyObject *args) {
    int type, rows, cols, n_threads;
    unsigned long long src, dst;
    if (!PyArg_ParseTuple(args, "iKKiii", &type, &src, &dst, &rows, &cols, &n_threads)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pack_rows8(type, ptr(src), ptr(dst), rows, cols, n_threads);
    Py_END_ALLOW_THREADS
    if (rc) return err(rc);
    Py_RETURN_NONE;
}

static PyObject *py_pool_stress(PyObject *self, PyObject *args) {
    /* test only: the thread pool's job hand-over under load (see pool_stress.c) */
    int n_jobs, max_tasks, n_threads;
    unsigned seed = 1;
    if (!PyArg_ParseTuple(args, "iii|I", &n_jobs, &max_tasks, &n_threads, &seed)) return NULL;
    long bad;
    Py_BEGIN_ALLOW_THREADS
    bad = pool_stress(n_jobs, max_tasks, n_threads, seed);
    Py_END_ALLOW_THREADS
    if (bad < 0) return PyErr_NoMemory();
    return PyLong_FromLong(bad);
}

static PyObject *py_kernel_table(PyObject *self, PyObject *noargs) {
    /* {ggml type id: (tier, activation kind)} */
    PyObject *d = PyDict_New();
    for (int t = 0; t < GT_MAX && d; t++) {
        const qtype_kernels *k = kernels_for(t);
        if (!k) continue;
        PyObject *v = Py_BuildValue("(si)", k->tier, (int)k->act);
        PyObject *key = PyLong_FromLong(t);
        PyDict_SetItem(d, key, v);
        Py_DECREF(v); Py_DECREF(key);
    }
    return d;
}

static PyMethodDef METHODS[] = {
    {"matmul", py_matmul, METH_VARARGS, "matmul(type, w, n_rows, n_cols, x, n_tokens, y, n_threads)"},
    {"matmul_heads", py_matmul_heads, METH_VARARGS,
     "matmul_heads(type, w, n_heads, n_rows, n_cols, x, n_tokens, y, n_threads)"},
    {"pack_rows8", py_pack_rows8, METH_VARARGS, "pack_rows8(type, src, dst, rows, cols, n_threads); see packed.c"},
    {"moe_ffn", py_moe_ffn, METH_VARARGS, "fused MoE FFN for one layer; see moe.h"},
    {"moe_layer", py_moe_layer, METH_VARARGS, "one MoE layer's checked arguments -> capsule; see moe_step.h"},
    {"moe_workspace", py_moe_workspace, METH_NOARGS, "grow-only buffers of the MoE step -> capsule"},
    {"moe_route", py_moe_route, METH_VARARGS, "norm, router, top-k, grouping of one MoE layer; see moe_step.h"},
    {"moe_experts", py_moe_experts, METH_VARARGS, "one batch of ready experts of the routed layer; see moe_step.h"},
    {"moe_route_export", py_moe_route_export, METH_VARARGS, "the routed layer's xn and pair weights; see moe_step.h"},
    {"moe_import_rows", py_moe_import_rows, METH_VARARGS, "rows of experts computed elsewhere; see moe_step.h"},
    {"moe_workspace_poison", py_moe_workspace_poison, METH_O, "NaN into the MoE workspace's buffers (test only)"},
    {"attn_layer", py_attn_layer, METH_VARARGS, "one layer's checked attention arguments -> capsule; see attention.h"},
    {"attn_step", py_attn_step, METH_VARARGS, "native attention step for one layer; see attention.h"},
    {"pool_stress", py_pool_stress, METH_VARARGS,
     "pool_stress(n_jobs, max_tasks, n_threads, seed=1) -> lost + repeated + out-of-range tasks (test only)"},
    {"kernel_table", py_kernel_table, METH_NOARGS, "{ggml type id: (tier, activation kind)}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_native", "moestream CPU kernels", -1, METHODS};

PyMODINIT_FUNC PyInit__native(void) {
    kernels_init();
    return PyModule_Create(&MODULE);
}
