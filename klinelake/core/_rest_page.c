/* A regular Binance klines page, from its bytes to Klines carrying their lake lines, in one pass.
 *
 * Why C: the backfill's CPU per row (issue 15) was bounded in Python by one object per value,
 * orjson's decode, the bulk shape checks and the serialisation (docs/BENCHMARKS.md, "The
 * columnar design in pure Python, measured"); no library validates Binance's compact kline
 * arrays by the lake's rules and writes the lake's canonical lines. This module does only that,
 * for the one shape Binance sends outside halts; anything else returns None and the Python
 * reference path (klinelake/core/row.py, `parse_rest_rows`) decides and names the problem.
 * It accepts a page only if the reference path accepts it, with the same rows and lines
 * (tests/core/test_rest_page_compiled.py compares both on generated and mutated pages).
 *
 * Equal decimal strings within a page are one string object (`shared_str`).
 *
 * A regular page: `[` rows joined by `,` `]`, no whitespace, each row
 *   [INT,"D","D","D","D","D",INT,"D",INT,"D","D","DIGITS"]
 * INT: JSON integer digits (no sign, no leading zero); D: 1..MAX_WHOLE digits, a dot, 1..MAX_FRAC
 * digits; open times contiguous on the grid (open_i = first + i * step, close_i = open_i + step
 * - 1), the first aligned to the anchor when asked, inside [min_ms, max_ms), trades <= max_trades.
 *
 * Klines are filled slot by slot through their member descriptors' offsets, which is what
 * `object.__setattr__` does for a slotted class, without the frozen dataclass's __init__.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <string.h>

#define N_COLUMNS 12
#define N_SLOTS 15 /* Kline's fields: 13 row values, market, the cached line */
#define N_FRAGMENTS 12

/* Set once by configure(): the Kline type, its slots' offsets (in field order), the rules. */
static PyTypeObject *kline_type = NULL;
static Py_ssize_t slot_offset[N_SLOTS];
static long long min_ms, max_ms, max_trades;
static Py_ssize_t max_whole, max_frac;

/* One parsed row: where each column's text lies in the body (quotes excluded), the integers. */
typedef struct {
    const char *text[N_COLUMNS];
    Py_ssize_t len[N_COLUMNS];
    long long open_time, close_time, trades;
} row_t;

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A JSON integer of at most 18 digits (more cannot pass the bounds): its value, or -1. */
static const char *parse_int(const char *p, const char *end, long long *value, Py_ssize_t *len)
{
    const char *start = p;
    long long v = 0;
    while (p < end && is_digit(*p)) {
        if (p - start == 18) return NULL;
        v = v * 10 + (*p - '0');
        p++;
    }
    if (p == start || (*start == '0' && p - start > 1)) return NULL; /* empty, leading zero */
    *value = v;
    *len = p - start;
    return p;
}

/* "digits.digits" with both parts within the rule; returns past the closing quote. */
static const char *parse_decimal(const char *p, const char *end, Py_ssize_t *len)
{
    if (p >= end || *p != '"') return NULL;
    const char *start = ++p;
    while (p < end && is_digit(*p)) p++;
    Py_ssize_t whole = p - start;
    if (whole < 1 || whole > max_whole || p >= end || *p != '.') return NULL;
    const char *frac_start = ++p;
    while (p < end && is_digit(*p)) p++;
    Py_ssize_t frac = p - frac_start;
    if (frac < 1 || frac > max_frac || p >= end || *p != '"') return NULL;
    *len = p - start;
    return p + 1;
}

/* "digits" (possibly empty): Binance's ignored last column. */
static const char *parse_ignored(const char *p, const char *end)
{
    if (p >= end || *p != '"') return NULL;
    p++;
    while (p < end && is_digit(*p)) p++;
    if (p >= end || *p != '"') return NULL;
    return p + 1;
}

static const char *expect(const char *p, const char *end, char c)
{
    return (p != NULL && p < end && *p == c) ? p + 1 : NULL;
}

static const char *parse_row(const char *p, const char *end, row_t *row)
{
    p = expect(p, end, '[');
    for (int col = 0; col < N_COLUMNS && p != NULL; col++) {
        if (col) p = expect(p, end, ',');
        if (p == NULL) return NULL;
        row->text[col] = p;
        switch (col) {
        case 0: p = parse_int(p, end, &row->open_time, &row->len[col]); break;
        case 6: p = parse_int(p, end, &row->close_time, &row->len[col]); break;
        case 8: p = parse_int(p, end, &row->trades, &row->len[col]); break;
        case 11: p = parse_ignored(p, end); break;
        default:
            row->text[col] = p + 1;
            p = parse_decimal(p, end, &row->len[col]);
        }
    }
    return expect(p, end, ']');
}

static PyObject *ascii_str(const char *text, Py_ssize_t len)
{
    PyObject *s = PyUnicode_New(len, 127);
    if (s != NULL) memcpy(PyUnicode_1BYTE_DATA(s), text, (size_t)len);
    return s;
}

/* The string for `text`: one of `seen` (ours, so compact ASCII) when equal, else a new one.
 * Prices repeat (an open is often the previous close; a quiet kline is flat with zero
 * volumes), and a shared string costs neither an allocation nor its memory. */
static PyObject *shared_str(const char *text, Py_ssize_t len, PyObject *const *seen, int n_seen)
{
    for (int j = 0; j < n_seen; j++) {
        PyObject *s = seen[j];
        if (s != NULL && PyUnicode_GET_LENGTH(s) == len &&
            memcmp(PyUnicode_1BYTE_DATA(s), text, (size_t)len) == 0)
            return Py_NewRef(s);
    }
    return ascii_str(text, len);
}

static PyObject *get_slot(PyObject *obj, int slot)
{
    return *(PyObject **)((char *)obj + slot_offset[slot]);
}

static void set_slot(PyObject *obj, int slot, PyObject *value)
{
    /* the slot is NULL (fresh object): the reference is moved in */
    *(PyObject **)((char *)obj + slot_offset[slot]) = value;
}

/* The line's values in order (REST column of each) between the 12 fragments. */
static const int line_columns[N_FRAGMENTS - 1] = {0, 6, 1, 2, 3, 4, 5, 7, 8, 9, 10};

static PyObject *build_kline(const row_t *row, PyObject *symbol, PyObject *interval,
                             PyObject *market, PyObject *const *fragments, PyObject *previous)
{
    Py_ssize_t size = 0;
    for (int i = 0; i < N_FRAGMENTS; i++) size += PyBytes_GET_SIZE(fragments[i]);
    for (int i = 0; i < N_FRAGMENTS - 1; i++) size += row->len[line_columns[i]];
    PyObject *line = PyBytes_FromStringAndSize(NULL, size);
    if (line == NULL) return NULL;
    char *out = PyBytes_AS_STRING(line);
    for (int i = 0; i < N_FRAGMENTS; i++) {
        Py_ssize_t flen = PyBytes_GET_SIZE(fragments[i]);
        memcpy(out, PyBytes_AS_STRING(fragments[i]), (size_t)flen);
        out += flen;
        if (i < N_FRAGMENTS - 1) {
            int col = line_columns[i];
            memcpy(out, row->text[col], (size_t)row->len[col]);
            out += row->len[col];
        }
    }

    PyObject *k = kline_type->tp_alloc(kline_type, 0);
    if (k == NULL) {
        Py_DECREF(line);
        return NULL;
    }
    /* Slots in Kline's field order; each value is moved in as soon as it exists, so that a
     * failed allocation leaves a half-filled Kline that deallocates cleanly (NULL slots). */
    static const int str_columns[8] = {1, 2, 3, 4, 5, 7, 9, 10};
    static const int str_slots[8] = {4, 5, 6, 7, 8, 9, 11, 12};
    set_slot(k, 14, line);
    Py_INCREF(symbol);
    set_slot(k, 2, symbol);
    Py_INCREF(interval);
    set_slot(k, 3, interval);
    Py_INCREF(market);
    set_slot(k, 13, market);
    PyObject *v;
    if ((v = PyLong_FromLongLong(row->open_time)) == NULL) goto fail;
    set_slot(k, 0, v);
    if ((v = PyLong_FromLongLong(row->close_time)) == NULL) goto fail;
    set_slot(k, 1, v);
    if ((v = PyLong_FromLongLong(row->trades)) == NULL) goto fail;
    set_slot(k, 10, v);
    /* candidates to share: the previous row's close, then this row's strings so far */
    PyObject *seen[9] = {previous != NULL ? get_slot(previous, 7) : NULL};
    for (int i = 0; i < 8; i++) {
        v = shared_str(row->text[str_columns[i]], row->len[str_columns[i]], seen, i + 1);
        if (v == NULL) goto fail;
        set_slot(k, str_slots[i], v);
        seen[i + 1] = v;
    }
    return k;
fail:
    Py_DECREF(k);
    return NULL;
}

PyDoc_STRVAR(klines_doc,
"klines(body, symbol, interval, market, fragments, step, anchor, check_anchor) -> list | None\n\n"
"The Klines of a regular page (bytes), each with its lake line; None if the page is not\n"
"regular. `fragments`: the 12 bytes between the line's 11 values (row.py builds them).");

static PyObject *klines(PyObject *module, PyObject *args)
{
    Py_buffer body;
    PyObject *symbol, *interval, *market, *fragments;
    long long step, anchor;
    int check_anchor;
    if (kline_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*UUOO!LLp", &body, &symbol, &interval, &market,
                          &PyTuple_Type, &fragments, &step, &anchor, &check_anchor))
        return NULL;
    PyObject *result = NULL;
    if (PyTuple_GET_SIZE(fragments) != N_FRAGMENTS || step <= 0) {
        PyErr_SetString(PyExc_ValueError, "12 fragments and a positive step are required");
        goto done;
    }
    for (int i = 0; i < N_FRAGMENTS; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(fragments, i))) {
            PyErr_SetString(PyExc_TypeError, "fragments must be bytes");
            goto done;
        }
    }
    /* One pass: each row is checked, then built; the first irregular byte or value drops
     * what was built and answers None (Binance sends regular pages outside halts). */
    const char *p = body.buf, *end = p + body.len;
    PyObject *const *frags = &PyTuple_GET_ITEM(fragments, 0);
    PyObject *list = PyList_New(0);
    if (list == NULL) goto done;
    row_t row;
    long long first = 0;
    Py_ssize_t n = 0;
    p = expect(p, end, '[');
    while (p != NULL) {
        if (n) p = expect(p, end, ',');
        p = parse_row(p, end, &row);
        if (p == NULL) break;
        if (n == 0) {
            first = row.open_time;
            if (first < min_ms) break;
            if (check_anchor && (((first - anchor) % step) + step) % step != 0) break;
        }
        long long open = first + (long long)n * step;
        if (open + step - 1 >= max_ms) break; /* this row's close_time is past the bound */
        if (row.open_time != open || row.close_time != open + step - 1) break;
        if (row.trades > max_trades) break;
        PyObject *previous = n ? PyList_GET_ITEM(list, n - 1) : NULL;
        PyObject *k = build_kline(&row, symbol, interval, market, frags, previous);
        if (k == NULL || PyList_Append(list, k) < 0) {
            Py_XDECREF(k);
            Py_DECREF(list);
            goto done;
        }
        Py_DECREF(k);
        n++;
        if (p < end && *p == ']') {
            if (p + 1 == end) {
                result = list;
                goto done;
            }
            break;
        }
    }
    Py_DECREF(list); /* not regular */
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&body);
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(kline_type, slot_names, min_ms, max_ms, max_trades, max_whole, max_frac)\n\n"
"The Kline class, its 15 slot names in field order, and the row rules' bounds.");

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *type, *names;
    if (!PyArg_ParseTuple(args, "O!O!LLLnn", &PyType_Type, &type, &PyTuple_Type, &names,
                          &min_ms, &max_ms, &max_trades, &max_whole, &max_frac))
        return NULL;
    if (PyTuple_GET_SIZE(names) != N_SLOTS) {
        PyErr_Format(PyExc_ValueError, "expected %d slot names", N_SLOTS);
        return NULL;
    }
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *descr = PyObject_GetAttr(type, PyTuple_GET_ITEM(names, i));
        if (descr == NULL) return NULL;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) slot_offset[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%R is not an object slot", PyTuple_GET_ITEM(names, i));
            return NULL;
        }
    }
    Py_XSETREF(kline_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"klines", klines, METH_VARARGS, klines_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_rest_page",
    "A regular Binance klines page to Klines with their lake lines (see the source's header).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__rest_page(void) { return PyModule_Create(&module_def); }
