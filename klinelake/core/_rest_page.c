/* A regular Binance klines page, from its bytes to its open times and lake lines, in one pass.
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
 * It builds no Kline: the backfill carries a page as its open times and lines (row.py
 * `StreamRows`), two objects per row where Klines took fourteen.
 *
 * A regular page: `[` rows joined by `,` `]`, no whitespace, each row
 *   [INT,"D","D","D","D","D",INT,"D",INT,"D","D","DIGITS"]
 * INT: JSON integer digits (no sign, no leading zero); D: 1..MAX_WHOLE digits, a dot, 1..MAX_FRAC
 * digits; open times contiguous on the grid (open_i = first + i * step, close_i = open_i + step
 * - 1), the first aligned to the anchor when asked, inside [min_ms, max_ms), trades <= max_trades.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define N_COLUMNS 12
#define N_FRAGMENTS 12

/* The rules' bounds, set by configure(). */
static int configured = 0;
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

/* The row's lake line: the 12 fragments with the row's 11 values (REST columns, in line order)
 * between them. */
static const int line_columns[N_FRAGMENTS - 1] = {0, 6, 1, 2, 3, 4, 5, 7, 8, 9, 10};

static PyObject *render_line(const row_t *row, PyObject *const *fragments)
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
    return line;
}

PyDoc_STRVAR(page_lines_doc,
"page_lines(body, fragments, step, anchor, check_anchor) -> (open_times, lines) | None\n\n"
"A regular page's (bytes) open times and lake lines, two lists in page order; None if the\n"
"page is not regular. `fragments`: the 12 bytes between the line's 11 values (row.py).");

static PyObject *page_lines(PyObject *module, PyObject *args)
{
    Py_buffer body;
    PyObject *fragments;
    long long step, anchor;
    int check_anchor;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*O!LLp", &body, &PyTuple_Type, &fragments, &step, &anchor,
                          &check_anchor))
        return NULL;
    PyObject *result = NULL, *times = NULL, *lines = NULL;
    /* A step and an anchor within the time bounds keep `first - anchor`, `first + n * step`
     * and `open + step - 1` within 64 bits: first < 10**18 (18 digits), and the loop stops
     * once open + step - 1 reaches max_ms. */
    if (PyTuple_GET_SIZE(fragments) != N_FRAGMENTS || step <= 0 || step > max_ms ||
        anchor < -max_ms || anchor > max_ms) {
        PyErr_SetString(PyExc_ValueError,
                        "12 fragments, a step in (0, max_ms] and |anchor| <= max_ms are required");
        goto done;
    }
    for (int i = 0; i < N_FRAGMENTS; i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(fragments, i))) {
            PyErr_SetString(PyExc_TypeError, "fragments must be bytes");
            goto done;
        }
    }
    /* One pass: each row is checked, then rendered; the first irregular byte or value drops
     * what was built and answers None (Binance sends regular pages outside halts). */
    const char *p = body.buf, *end = p + body.len;
    PyObject *const *frags = &PyTuple_GET_ITEM(fragments, 0);
    times = PyList_New(0);
    lines = PyList_New(0);
    if (times == NULL || lines == NULL) goto done;
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
        PyObject *t = PyLong_FromLongLong(open);
        if (t == NULL || PyList_Append(times, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
        PyObject *line = render_line(&row, frags);
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            goto done;
        }
        Py_DECREF(line);
        n++;
        if (p < end && *p == ']') {
            if (p + 1 == end) result = PyTuple_Pack(2, times, lines);
            break;
        }
    }
    if (result == NULL && !PyErr_Occurred()) result = Py_NewRef(Py_None); /* not regular */
done:
    Py_XDECREF(times);
    Py_XDECREF(lines);
    PyBuffer_Release(&body);
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(min_ms, max_ms, max_trades, max_whole, max_frac)\n\n"
"The row rules' bounds (row.py). A refused configure() leaves the module as it was.");

static PyObject *configure(PyObject *module, PyObject *args)
{
    long long min, max, trades;
    Py_ssize_t whole, frac;
    if (!PyArg_ParseTuple(args, "LLLnn", &min, &max, &trades, &whole, &frac)) return NULL;
    /* the grid arithmetic in page_lines() stays within 64 bits for times within these bounds */
    if (min < 0 || max <= min || max > (1LL << 50) || trades < 0 || whole < 1 || frac < 1) {
        PyErr_SetString(PyExc_ValueError, "bounds out of range");
        return NULL;
    }
    min_ms = min, max_ms = max, max_trades = trades, max_whole = whole, max_frac = frac;
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"page_lines", page_lines, METH_VARARGS, page_lines_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_rest_page",
    "A regular Binance klines page to its open times and lake lines (see the source's header).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__rest_page(void) { return PyModule_Create(&module_def); }
