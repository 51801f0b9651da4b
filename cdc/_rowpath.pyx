# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled row path: one pgoutput Insert/Update/Delete in, the event's JSON bytes, key and headers out.

It writes exactly the bytes the reference path (``cdc.entities`` + ``orjson``) writes, without
building the event as Python objects. Anything it does not handle itself (an unchanged TOAST
value, a value in an unusual text form, a converter that raises) makes ``encode`` return None,
and the caller takes the reference path for that row: that is also where errors are named.
``cdc.rowpath`` builds the plan from a ``TableMapping``; the property test in
tests/test_rowpath.py checks both paths give the same bytes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport isfinite
from libc.string cimport memcmp, memcpy

import orjson

cdef extern from "Python.h":
    double PyOS_string_to_double(const char *s, char **endptr, object overflow_exception) except? -1.0
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    int Py_DTSF_ADD_DOT_0
    void PyMem_Free(void *p)

# Column kinds: what the compiled path does with a column's text.
K_TEXT = 0
K_INT = 1
K_BOOL = 2
K_FRAGMENT = 3
K_TIMESTAMPTZ = 4
K_TIMESTAMP = 5
K_FLOAT = 6
K_ARRAY_TEXT = 7
K_ARRAY_INT = 8
K_OTHER = 9  # the reference converter, called from here

cdef enum:
    C_TEXT = 0
    C_INT = 1
    C_BOOL = 2
    C_FRAGMENT = 3
    C_TIMESTAMPTZ = 4
    C_TIMESTAMP = 5
    C_FLOAT = 6
    C_ARRAY_TEXT = 7
    C_ARRAY_INT = 8
    C_OTHER = 9


class Unsupported(Exception):
    """This row takes the reference path."""


_dumps = orjson.dumps

# ---------------------------------------------------------------- output buffer

cdef struct Buf:
    char *data
    Py_ssize_t size
    Py_ssize_t cap


cdef int buf_grow(Buf *b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2 if b.cap else 4096
    while cap < b.size + extra:
        cap *= 2
    cdef char *data = <char *> PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline void buf_trim(Buf *b):
    """Give back a buffer a huge value grew, rather than keep it for the life of the relation."""
    if b.cap > (4 << 20):
        PyMem_Free(b.data)
        b.data = NULL
        b.cap = 0
        b.size = 0


cdef inline int buf_put(Buf *b, const char *src, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        buf_grow(b, n)
    memcpy(b.data + b.size, src, n)
    b.size += n
    return 0


cdef inline int buf_byte(Buf *b, char c) except -1:
    if b.size + 1 > b.cap:
        buf_grow(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef inline int buf_bytes(Buf *b, bytes value) except -1:
    return buf_put(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cdef int buf_uint(Buf *b, unsigned long long value, int width) except -1:
    """Decimal digits of ``value``, zero-padded to ``width``."""
    cdef char digits[24]
    cdef int n = 0
    while value or n < width or n == 0:
        digits[23 - n] = <char> (48 + value % 10)
        value //= 10
        n += 1
    return buf_put(b, &digits[24 - n], n)


# ---------------------------------------------------------------- JSON strings (orjson's escaping)

cdef unsigned char ESCAPE[256]
cdef int _i
for _i in range(256):
    ESCAPE[_i] = 1 if _i < 0x20 or _i == 0x22 or _i == 0x5C else 0
cdef const char *HEX = b"0123456789abcdef"


cdef int json_string_body(Buf *b, const unsigned char *s, Py_ssize_t n) except -1:
    """``s`` escaped as orjson escapes it: quote, backslash and control characters; UTF-8 as is."""
    cdef Py_ssize_t i = 0, start = 0
    cdef unsigned char c
    cdef char esc[6]
    while i < n:
        c = s[i]
        if not ESCAPE[c]:
            i += 1
            continue
        if i > start:
            buf_put(b, <const char *> s + start, i - start)
        if c == 0x22:
            buf_put(b, b'\\"', 2)
        elif c == 0x5C:
            buf_put(b, b"\\\\", 2)
        elif c == 0x0A:
            buf_put(b, b"\\n", 2)
        elif c == 0x09:
            buf_put(b, b"\\t", 2)
        elif c == 0x0D:
            buf_put(b, b"\\r", 2)
        elif c == 0x08:
            buf_put(b, b"\\b", 2)
        elif c == 0x0C:
            buf_put(b, b"\\f", 2)
        else:
            esc[0] = 92
            esc[1] = 117
            esc[2] = 48
            esc[3] = 48
            esc[4] = HEX[c >> 4]
            esc[5] = HEX[c & 15]
            buf_put(b, esc, 6)
        i += 1
        start = i
    if n > start:
        buf_put(b, <const char *> s + start, n - start)
    return 0


cdef inline int json_string(Buf *b, const unsigned char *s, Py_ssize_t n) except -1:
    buf_byte(b, 34)
    json_string_body(b, s, n)
    buf_byte(b, 34)
    return 0


cdef bint valid_utf8(const unsigned char *s, Py_ssize_t n):
    """What ``bytes.decode('utf-8')`` accepts: no overlong forms, no surrogates, nothing past U+10FFFF."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c >= 0xC2 and c <= 0xDF:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c >= 0xE0 and c <= 0xEF:
            if i + 2 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            c1 = s[i + 1]
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return False
            i += 3
        elif c >= 0xF0 and c <= 0xF4:
            if (i + 3 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80
                    or (s[i + 3] & 0xC0) != 0x80):
                return False
            c1 = s[i + 1]
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
                return False
            i += 4
        else:
            return False
    return True


cdef bint plain_int(const unsigned char *s, Py_ssize_t n):
    """Postgres' canonical integer text: an optional minus, then digits without a leading zero."""
    cdef Py_ssize_t i = 1 if n and s[0] == 45 else 0
    if i >= n or (s[i] == 48 and n - i > 1) or (i == 1 and n == 2 and s[1] == 48):
        return False
    if n - i > 19:
        return False  # past 64 bits orjson refuses the value: the reference path says so
    while i < n:
        if s[i] < 48 or s[i] > 57:
            return False
        i += 1
    return True


cdef bint plain_ascii(const unsigned char *s, Py_ssize_t n):
    """Printable ASCII that JSON needs no escape for."""
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] < 0x20 or s[i] >= 0x7F or s[i] == 0x22 or s[i] == 0x5C:
            return False
    return True


# ---------------------------------------------------------------- the plan

cdef class Template:
    """A path template as literal parts around column positions (``'a/{x}/b'``: ``a/``, x, ``/b``)."""

    cdef list literals  # bytes, one more than positions
    cdef int *positions
    cdef int count

    def __cinit__(self, list literals, list positions):
        self.literals = literals
        self.count = len(positions)
        self.positions = <int *> PyMem_Malloc(max(1, self.count) * sizeof(int))
        for i in range(self.count):
            self.positions[i] = positions[i]

    def __dealloc__(self):
        PyMem_Free(self.positions)


cdef class Row:
    """One decoded tuple: where each value lies in the message, or -1 for NULL."""

    cdef Py_ssize_t *starts
    cdef Py_ssize_t *lengths
    cdef int count

    def __cinit__(self, int count):
        self.count = count
        self.starts = <Py_ssize_t *> PyMem_Malloc(max(1, count) * sizeof(Py_ssize_t))
        self.lengths = <Py_ssize_t *> PyMem_Malloc(max(1, count) * sizeof(Py_ssize_t))

    def __dealloc__(self):
        PyMem_Free(self.starts)
        PyMem_Free(self.lengths)


cdef class RowPlan:
    """What the compiled path needs of one ``TableMapping``; built by ``cdc.rowpath.plan_for``."""

    cdef int ncols
    cdef int *kinds
    cdef list converters
    cdef int nprops
    cdef int *prop_columns
    cdef int nexcluded
    cdef int *excluded  # columns that are no property: still converted, as the reference does
    cdef list prop_names  # b'"name":'
    cdef list mask_names  # b'"name"'
    cdef Template entity_path, entity_id, collection_path
    cdef int organization, create_time, update_time
    cdef bint organization_in_key
    cdef object fixed_organization  # bytes: the entity's one organization, when it has no column
    cdef bytes entity_key, entity_key_json
    cdef tuple environment_header
    cdef Row new_row, old_row
    cdef Buf out, scratch

    def __cinit__(self, list kinds, list converters, list prop_columns, list prop_names, list mask_names,
                  Template entity_path, Template entity_id, Template collection_path,
                  int organization, bint organization_in_key, int create_time, int update_time, str entity_key,
                  environment, fixed_organization=None):
        self.ncols = len(kinds)
        self.kinds = <int *> PyMem_Malloc(max(1, self.ncols) * sizeof(int))
        for i in range(self.ncols):
            self.kinds[i] = kinds[i]
        self.converters = converters
        self.nprops = len(prop_columns)
        self.prop_columns = <int *> PyMem_Malloc(max(1, self.nprops) * sizeof(int))
        for i in range(self.nprops):
            self.prop_columns[i] = prop_columns[i]
        self.prop_names = prop_names
        excluded = [i for i in range(self.ncols) if i not in set(prop_columns)]
        self.nexcluded = len(excluded)
        self.excluded = <int *> PyMem_Malloc(max(1, self.nexcluded) * sizeof(int))
        for i in range(self.nexcluded):
            self.excluded[i] = excluded[i]
        self.mask_names = mask_names
        self.entity_path = entity_path
        self.entity_id = entity_id
        self.collection_path = collection_path
        self.organization = organization
        self.organization_in_key = organization_in_key
        self.fixed_organization = fixed_organization.encode() if fixed_organization is not None else None
        self.create_time = create_time
        self.update_time = update_time
        self.entity_key = entity_key.encode()
        self.entity_key_json = _dumps(entity_key)
        self.environment_header = ("walhook-environment", environment.encode()) if environment else None
        self.new_row = Row(self.ncols)
        self.old_row = Row(self.ncols)

    def __dealloc__(self):
        PyMem_Free(self.kinds)
        PyMem_Free(self.prop_columns)
        PyMem_Free(self.excluded)
        PyMem_Free(self.out.data)
        PyMem_Free(self.scratch.data)

    def encode(self, bytes payload, tx, int index):
        """(key, value, headers) for one Insert/Update/Delete payload, or None for the reference path."""
        try:
            return self._encode(payload, tx, index)
        except Unsupported:
            return None

    cdef object _encode(self, bytes payload, tx, int index):
        cdef const unsigned char *msg = <const unsigned char *> PyBytes_AS_STRING(payload)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload), offset
        cdef unsigned char tag = msg[0] if size else 0
        cdef unsigned char marker
        cdef bint has_old = False, key_only = False
        if size < 6:
            raise Unsupported
        marker = msg[5]
        if tag == 73:  # 'I'
            if marker != 78:
                raise Unsupported
            self._tuple(msg, size, 6, self.new_row)
            return self._event(payload, tx, index, b"created", self.new_row, None, False, False)
        if tag == 85:  # 'U'
            offset = 6
            if marker == 75 or marker == 79:  # 'K', 'O'
                offset = self._tuple(msg, size, 6, self.old_row)
                if offset >= size or msg[offset] != 78:
                    raise Unsupported
                offset += 1
                has_old = True
                key_only = marker == 75
            elif marker != 78:
                raise Unsupported
            self._tuple(msg, size, offset, self.new_row)
            if has_old and self._may_have_moved(msg, key_only):
                raise Unsupported  # a row moved to another organization is two events: the reference path
            return self._event(payload, tx, index, b"updated", self.new_row, self.old_row if has_old else None,
                               key_only, has_old and not key_only)
        if tag == 68 and (marker == 75 or marker == 79):  # 'D'
            self._tuple(msg, size, 6, self.old_row)
            return self._event(payload, tx, index, b"deleted", None, self.old_row, marker == 75, False)
        raise Unsupported

    cdef bint _may_have_moved(self, const unsigned char *msg, bint key_only):
        """Whether the update may have changed the row's organization, as far as the old row tells."""
        cdef int column = self.organization
        cdef Py_ssize_t n
        if column < 0 or (key_only and not self.organization_in_key):
            return False
        if self.kinds[column] != C_TEXT and self.kinds[column] != C_INT:
            return True  # equal values in other types may differ in text (and NaN is not equal to itself)
        n = self.new_row.lengths[column]
        return n != self.old_row.lengths[column] or (
            n > 0 and memcmp(msg + self.new_row.starts[column], msg + self.old_row.starts[column], n) != 0)

    cdef Py_ssize_t _tuple(self, const unsigned char *msg, Py_ssize_t size, Py_ssize_t offset, Row row) except -1:
        """Locate each value of the tuple at ``offset``; the offset after it."""
        cdef int count, i
        cdef unsigned char kind
        cdef Py_ssize_t length
        if offset + 2 > size:
            raise Unsupported
        count = (msg[offset] << 8) | msg[offset + 1]
        if count != self.ncols:
            raise Unsupported
        offset += 2
        for i in range(count):
            if offset >= size:
                raise Unsupported
            kind = msg[offset]
            if kind == 116:  # 't'
                if offset + 5 > size:
                    raise Unsupported
                length = ((<Py_ssize_t> msg[offset + 1] << 24) | (msg[offset + 2] << 16)
                          | (msg[offset + 3] << 8) | msg[offset + 4])
                offset += 5
                if length > 0x7FFFFFFF or offset + length > size:
                    raise Unsupported
                row.starts[i] = offset
                row.lengths[i] = length
                offset += length
            elif kind == 110:  # 'n'
                row.lengths[i] = -1
                offset += 1
            else:  # 'u' unchanged TOAST, 'b' binary: the reference path
                raise Unsupported
        return offset

    # ------------------------------------------------------------ the event

    cdef object _event(self, bytes payload, tx, int index, bytes operation, Row new, Row old, bint key_only,
                       bint mask):
        cdef const unsigned char *msg = <const unsigned char *> PyBytes_AS_STRING(payload)
        cdef Row main = new if new is not None else old
        cdef Buf *b = &self.out
        cdef Py_ssize_t event_id_at
        parts = tx.encoded
        if parts is None:
            parts = tx.encoded = _transaction_parts(tx)
        b.size = 0
        if self.nexcluded:
            if new is not None:
                self._check_excluded(msg, new)
            if old is not None:
                self._check_excluded(msg, old)
        buf_bytes(b, <bytes> parts[0])
        buf_bytes(b, operation)
        buf_put(b, b'","entityPath":', 15)
        path = self._render(msg, main, self.entity_path)
        json_string(b, <const unsigned char *> PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path))
        buf_put(b, b',"entityId":', 12)
        self._json_template(msg, main, self.entity_id)
        buf_put(b, b',"entityKey":', 13)
        buf_bytes(b, self.entity_key_json)
        buf_put(b, b',"collectionPath":', 18)
        self._json_template(msg, main, self.collection_path)
        buf_put(b, b',"organizationId":', 18)
        organization = self._organization(msg, main)
        if organization is None:
            buf_put(b, b"null", 4)
        else:
            json_string(b, <const unsigned char *> PyBytes_AS_STRING(organization), PyBytes_GET_SIZE(organization))
        buf_put(b, b',"data":{"value":', 17)
        if new is None:
            buf_put(b, b"null", 4)
        else:
            self._state(msg, new, False, path)
        buf_put(b, b',"oldValue":', 12)
        if old is None:
            buf_put(b, b"null", 4)
        elif new is None:
            self._state(msg, old, key_only, path)
        else:
            self._state(msg, old, key_only, None)
        buf_put(b, b',"updateMask":', 14)
        if mask:
            self._mask(msg, new, old)
        else:
            buf_put(b, b"null", 4)
        buf_put(b, b'},"eventId":"', 13)
        event_id_at = b.size
        buf_bytes(b, <bytes> parts[1])
        buf_uint(b, index, 6)
        event_id = PyBytes_FromStringAndSize(b.data + event_id_at, b.size - event_id_at)
        buf_bytes(b, <bytes> parts[2])
        buf_uint(b, index, 0)
        buf_put(b, b"}}", 2)
        value = PyBytes_FromStringAndSize(b.data, b.size)
        buf_trim(b)
        buf_trim(&self.scratch)
        organization = organization or b""
        headers = [("walhook-event-id", event_id), ("walhook-organization-id", organization),
                   ("walhook-entity-key", self.entity_key), ("walhook-operation-type", operation),
                   ("walhook-entity-path", path)]
        if self.environment_header is not None:
            headers.append(self.environment_header)
        return organization + b"|" + path, value, headers

    cdef int _check_excluded(self, const unsigned char *msg, Row row) except -1:
        """Convert the columns left out of the event and drop the result: a bad value is still an error."""
        cdef int i
        for i in range(self.nexcluded):
            self._json_value(msg, row, self.excluded[i])
        self.out.size = 0
        return 0

    cdef int _state(self, const unsigned char *msg, Row row, bint key_only, path) except -1:
        cdef Buf *b = &self.out
        cdef int i, column
        cdef bint first = True
        buf_put(b, b'{"key":', 7)
        if path is None:
            path = self._render(msg, row, self.entity_path)
        json_string(b, <const unsigned char *> PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path))
        buf_put(b, b',"properties":{', 15)
        for i in range(self.nprops):
            column = self.prop_columns[i]
            if key_only and row.lengths[column] < 0:
                continue
            if not first:
                buf_byte(b, 44)
            first = False
            buf_bytes(b, <bytes> self.prop_names[i])
            self._json_value(msg, row, column)
        buf_put(b, b'},"createTime":', 15)
        self._json_column(msg, row, self.create_time)
        buf_put(b, b',"updateTime":', 14)
        self._json_column(msg, row, self.update_time)
        buf_byte(b, 125)
        return 0

    cdef int _mask(self, const unsigned char *msg, Row new, Row old) except -1:
        """Properties whose text differs between the old and the new tuple."""
        cdef Buf *b = &self.out
        cdef int i, column
        cdef Py_ssize_t n
        cdef bint first = True
        buf_byte(b, 91)
        for i in range(self.nprops):
            column = self.prop_columns[i]
            n = new.lengths[column]
            if n == old.lengths[column] and (n < 0 or memcmp(msg + new.starts[column], msg + old.starts[column],
                                                              n) == 0):
                continue
            if not first:
                buf_byte(b, 44)
            first = False
            buf_bytes(b, <bytes> self.mask_names[i])
        buf_byte(b, 93)
        return 0

    cdef int _json_column(self, const unsigned char *msg, Row row, int column) except -1:
        if column < 0:
            return buf_put(&self.out, b"null", 4)
        return self._json_value(msg, row, column)

    cdef int _json_template(self, const unsigned char *msg, Row row, Template template) except -1:
        text = self._render(msg, row, template)
        return json_string(&self.out, <const unsigned char *> PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))

    cdef object _organization(self, const unsigned char *msg, Row row):
        """``str(value)`` of the organization column as UTF-8; for no column or NULL the fixed organization
        (None when there is none)."""
        if self.organization < 0 or row.lengths[self.organization] < 0:
            return self.fixed_organization
        self.scratch.size = 0
        self._str_form(msg, row, self.organization, &self.scratch)
        return PyBytes_FromStringAndSize(self.scratch.data, self.scratch.size)

    cdef bytes _render(self, const unsigned char *msg, Row row, Template template):
        """The template filled in with ``str()`` of each value, as UTF-8 (``f"{value}"`` in the reference)."""
        cdef Buf *s = &self.scratch
        cdef int i
        if template.count == 0:
            return <bytes> template.literals[0]
        s.size = 0
        for i in range(template.count):
            buf_bytes(s, <bytes> template.literals[i])
            self._str_form(msg, row, template.positions[i], s)
        buf_bytes(s, <bytes> template.literals[template.count])
        return PyBytes_FromStringAndSize(s.data, s.size)

    # ------------------------------------------------------------ one value

    cdef int _str_form(self, const unsigned char *msg, Row row, int column, Buf *s) except -1:
        cdef Py_ssize_t n = row.lengths[column]
        cdef const unsigned char *v = msg + row.starts[column]
        cdef int kind = self.kinds[column]
        if n < 0:
            return buf_put(s, b"None", 4)
        if kind == C_TEXT:
            if not valid_utf8(v, n):
                raise Unsupported
            return buf_put(s, <const char *> v, n)
        if kind == C_INT:
            if not plain_int(v, n):
                raise Unsupported
            return buf_put(s, <const char *> v, n)
        if kind == C_BOOL:
            if n == 1 and v[0] == 116:
                return buf_put(s, b"True", 4)
            return buf_put(s, b"False", 5)
        if (kind == C_TIMESTAMPTZ or kind == C_TIMESTAMP) and self._timestamp(v, n, kind, s):
            return 0
        text = str(self._convert(msg, row, column)).encode()
        return buf_bytes(s, text)

    cdef object _convert(self, const unsigned char *msg, Row row, int column):
        """The reference converter's value; any failure sends the row to the reference path."""
        raw = PyBytes_FromStringAndSize(<const char *> msg + row.starts[column], row.lengths[column])
        try:
            return self.converters[column](raw)
        except Exception:
            raise Unsupported

    cdef bint _timestamp(self, const unsigned char *v, Py_ssize_t n, int kind, Buf *s) except -1:
        """The common forms, written directly: ``2024-05-01 12:00:00.5+00`` -> ``2024-05-01T12:00:00.5Z``."""
        cdef Py_ssize_t i
        if n < 11 or v[10] != 32 or not plain_ascii(v, n):
            return False
        if kind == C_TIMESTAMPTZ:
            if n < 14 or v[n - 3] != 43 or v[n - 2] != 48 or v[n - 1] != 48:
                return False
            buf_put(s, <const char *> v, 10)
            buf_byte(s, 84)
            buf_put(s, <const char *> v + 11, n - 14)
            buf_byte(s, 90)
            return True
        if v[n - 1] == 67 or v[n - 1] == 121:  # ' BC', '...infinity'
            return False
        for i in range(10):
            if v[i] == 32:  # the reference replaces the first space
                return False
        buf_put(s, <const char *> v, 10)
        buf_byte(s, 84)
        buf_put(s, <const char *> v + 11, n - 11)
        return True

    cdef int _json_value(self, const unsigned char *msg, Row row, int column) except -1:
        cdef Buf *b = &self.out
        cdef Py_ssize_t n = row.lengths[column]
        cdef const unsigned char *v = msg + row.starts[column]
        cdef int kind = self.kinds[column]
        if n < 0:
            return buf_put(b, b"null", 4)
        if kind == C_TEXT:
            if not valid_utf8(v, n):
                raise Unsupported
            return json_string(b, v, n)
        if kind == C_INT:
            if not plain_int(v, n):
                raise Unsupported
            return buf_put(b, <const char *> v, n)
        if kind == C_BOOL:
            if n == 1 and v[0] == 116:
                return buf_put(b, b"true", 4)
            return buf_put(b, b"false", 5)
        if kind == C_FRAGMENT:
            return buf_put(b, <const char *> v, n)
        if kind == C_FLOAT and self._float(v, n):
            return 0
        if kind == C_TIMESTAMPTZ or kind == C_TIMESTAMP:
            buf_byte(b, 34)
            if self._timestamp(v, n, kind, b):
                return buf_byte(b, 34)
            b.size -= 1
        elif (kind == C_ARRAY_TEXT or kind == C_ARRAY_INT) and self._flat_array(v, n, kind):
            return 0
        return buf_bytes(b, _dumps(self._convert(msg, row, column)))

    cdef bint _float(self, const unsigned char *v, Py_ssize_t n) except -1:
        """A finite float8/float4 as orjson writes it (Python's repr, exponent without zero padding); False
        for what it leaves to orjson (non-finite values, and exponent -5, which orjson writes in decimal)."""
        cdef char text[64]
        cdef char *end
        cdef char *shown
        cdef double value
        cdef Py_ssize_t i, length
        if n == 0 or n >= 63:
            return False
        memcpy(text, v, n)
        text[n] = 0
        try:
            value = PyOS_string_to_double(text, &end, None)
        except ValueError:
            return False
        if end != text + n or not isfinite(value):
            return False
        shown = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
        try:
            length = 0
            while shown[length]:
                length += 1
            i = 0
            while i < length and shown[i] != 101:  # 'e'
                i += 1
            if i + 3 < length and shown[i + 1] == 45 and shown[i + 2] == 48 and shown[i + 3] == 53:
                # 'e-05': orjson writes these in decimal (0.0000...), Python's repr with an exponent.
                # Rare in data, so orjson itself writes them: the bytes follow whichever orjson runs.
                return False
            if i + 2 < length and shown[i + 1] == 45 and shown[i + 2] == 48:  # 'e-0X' -> 'e-X'
                buf_put(&self.out, shown, i + 2)
                buf_put(&self.out, shown + i + 3, length - i - 3)
            else:
                buf_put(&self.out, shown, length)
        finally:
            PyMem_Free(shown)
        return True

    cdef bint _flat_array(self, const unsigned char *v, Py_ssize_t n, int kind) except -1:
        """A one-dimensional array of unquoted elements: ``{a,NULL,c}`` -> ``["a",null,"c"]``."""
        cdef Buf *b = &self.out
        cdef Py_ssize_t i, start, mark = b.size
        if n < 2 or v[0] != 123 or v[n - 1] != 125 or not valid_utf8(v, n):
            return False
        for i in range(1, n):
            if v[i] == 34 or (v[i] == 123):
                return False
        buf_byte(b, 91)
        if n > 2:
            start = 1
            for i in range(1, n):
                if v[i] != 44 and i != n - 1:
                    continue
                if start > 1:
                    buf_byte(b, 44)
                if not self._element(v + start, i - start, kind):
                    b.size = mark
                    return False
                start = i + 1
        buf_byte(b, 93)
        return True

    cdef bint _element(self, const unsigned char *v, Py_ssize_t n, int kind) except -1:
        if n == 4 and memcmp(v, b"NULL", 4) == 0:
            buf_put(&self.out, b"null", 4)
            return True
        if kind == C_ARRAY_TEXT:
            json_string(&self.out, v, n)
            return True
        if not plain_int(v, n):
            return False
        buf_put(&self.out, <const char *> v, n)
        return True


def _transaction_parts(tx):
    """What every event of a transaction shares: the JSON around the per-event parts."""
    head = b'{"eventTimestamp":' + _dumps(tx.event_timestamp) + b',"operationType":"'
    event_id = _dumps(tx.event_id_prefix)
    event_id = event_id[1:len(event_id) - 1]
    tail = (b'","transaction":{"id":' + _dumps(tx.xid) + b',"commitLsn":' + _dumps(tx.commit_lsn_text)
            + b',"index":')
    return head, event_id, tail
