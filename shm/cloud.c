/*
 * cloud.c - point clouds: an in-memory layout, binary PLY and PCD readers
 * and writers, and a generator of synthetic clouds.
 *
 * A cloud is `count` points of `stride` bytes each, packed, every point
 * holding the same fields (name, scalar type, offset) in order: the layout
 * both binary PLY ("element vertex" with scalar properties) and binary PCD
 * (COUNT 1 per field) store on disk, so reading and writing is one header
 * plus one block copy.  Multi-byte values are little-endian (x86 and the
 * file formats agree; big-endian files are refused).
 *
 * Readers parse from memory - typically a received blob, mapped read-only -
 * and trust nothing: the header is bounded (64 KiB), every number parsed
 * with range checks, count * stride checked against the bytes present.
 * BM_ECORRUPT for a malformed file; -ENOTSUP for valid files we do not read
 * (ascii, compressed, list properties in the vertex element, COUNT > 1).
 *
 * Threading: none; a cloud belongs to its caller.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm_private.h"

#define S_HEADER_MAX (64 * 1024)

struct bm_cloud {
	uint64_t count;                           /* points */
	size_t stride;                            /* bytes per point */
	size_t nfields;                           /* fields per point */
	bm_cloud_field_t fields[BM_CLOUD_MAX_FIELDS]; /* in order, packed */
	uint8_t *data;                            /* count * stride bytes */
	size_t data_len;                          /* bytes mapped */
};

static const struct {
	const char *ply;     /* PLY type name */
	const char *ply_alt; /* PLY's other spelling */
	char pcd;            /* PCD TYPE letter */
	uint32_t size;       /* bytes */
} s_types[] = {
	[BM_CLOUD_F32] = {"float", "float32", 'F', 4},
	[BM_CLOUD_F64] = {"double", "float64", 'F', 8},
	[BM_CLOUD_U8] = {"uchar", "uint8", 'U', 1},
	[BM_CLOUD_I8] = {"char", "int8", 'I', 1},
	[BM_CLOUD_U16] = {"ushort", "uint16", 'U', 2},
	[BM_CLOUD_I16] = {"short", "int16", 'I', 2},
	[BM_CLOUD_U32] = {"uint", "uint32", 'U', 4},
	[BM_CLOUD_I32] = {"int", "int32", 'I', 4},
};
#define S_NTYPES (sizeof s_types / sizeof s_types[0])

int
bm_cloud_new(uint64_t count, const bm_cloud_field_t *fields, size_t nfields, bm_cloud_t **ret_cloud)
{
	bm_cloud_t *self;
	size_t stride = 0;

	if (ret_cloud == NULL || fields == NULL || nfields == 0 || nfields > BM_CLOUD_MAX_FIELDS) {
		return -EINVAL;
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		return -ENOMEM;
	}
	for (size_t i = 0; i < nfields; i++) {
		if (fields[i].type >= S_NTYPES || fields[i].name[0] == '\0' ||
		    memchr(fields[i].name, '\0', sizeof fields[i].name) == NULL) {
			free(self);
			return -EINVAL;
		}
		self->fields[i] = fields[i];
		self->fields[i].offset = (uint32_t)stride;
		stride += s_types[fields[i].type].size;
	}
	self->nfields = nfields;
	self->stride = stride;
	self->count = count;
	if (count > (SIZE_MAX / 4) / stride) {
		free(self);
		return -ENOMEM;
	}
	self->data_len = (size_t)count * stride;
	if (self->data_len > 0) {
		self->data = mmap(NULL, self->data_len, PROT_READ | PROT_WRITE,
		                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (self->data == MAP_FAILED) {
			free(self);
			return -ENOMEM;
		}
	}
	*ret_cloud = self;
	return 0;
}

void
bm_cloud_destroy(bm_cloud_t **self_p)
{
	bm_cloud_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	if (self->data != NULL) {
		munmap(self->data, self->data_len);
	}
	free(self);
	*self_p = NULL;
}

uint64_t
bm_cloud_count(const bm_cloud_t *self)
{
	return self ? self->count : 0;
}

size_t
bm_cloud_stride(const bm_cloud_t *self)
{
	return self ? self->stride : 0;
}

size_t
bm_cloud_nfields(const bm_cloud_t *self)
{
	return self ? self->nfields : 0;
}

const bm_cloud_field_t *
bm_cloud_field(const bm_cloud_t *self, size_t i)
{
	return (self && i < self->nfields) ? &self->fields[i] : NULL;
}

int
bm_cloud_find(const bm_cloud_t *self, const char *name)
{
	for (size_t i = 0; self != NULL && name != NULL && i < self->nfields; i++) {
		if (strcmp(self->fields[i].name, name) == 0) {
			return (int)i;
		}
	}
	return -ENOENT;
}

void *
bm_cloud_data(bm_cloud_t *self)
{
	return self ? self->data : NULL;
}

static void
s_field(bm_cloud_field_t *f, const char *name, uint32_t type)
{
	memset(f, 0, sizeof *f);
	snprintf(f->name, sizeof f->name, "%s", name);
	f->type = type;
}

static uint64_t
s_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static float
s_unit(uint64_t *s)
{
	return (float)(s_rand(s) >> 40) / (float)(1u << 24);
}

int
bm_cloud_generate(uint64_t count, int layout, uint64_t seed, bm_cloud_t **ret_cloud)
{
	bm_cloud_field_t f[6];
	size_t nf = 3;
	bm_cloud_t *self;
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
	int rc;

	s_field(&f[0], "x", BM_CLOUD_F32);
	s_field(&f[1], "y", BM_CLOUD_F32);
	s_field(&f[2], "z", BM_CLOUD_F32);
	if (layout == BM_CLOUD_XYZ_RGB) {
		s_field(&f[3], "red", BM_CLOUD_U8);
		s_field(&f[4], "green", BM_CLOUD_U8);
		s_field(&f[5], "blue", BM_CLOUD_U8);
		nf = 6;
	} else if (layout == BM_CLOUD_XYZ_INTENSITY) {
		s_field(&f[3], "intensity", BM_CLOUD_F32);
		nf = 4;
	} else if (layout != BM_CLOUD_XYZ) {
		return -EINVAL;
	}
	if ((rc = bm_cloud_new(count, f, nf, &self)) < 0) {
		return rc;
	}
	/* Two thirds on a noisy sphere of radius 5, the rest on the ground
	 * plane z = -5: enough structure to look at. */
	for (uint64_t i = 0; i < count; i++) {
		uint8_t *p = self->data + i * self->stride;
		float xyz[3];

		if (i % 3 != 2) {
			float u = s_unit(&s) * 2.0f - 1.0f, t = s_unit(&s) * 6.2831853f;
			float r = 5.0f + (s_unit(&s) - 0.5f) * 0.05f, q = sqrtf(1.0f - u * u);

			xyz[0] = r * q * cosf(t);
			xyz[1] = r * q * sinf(t);
			xyz[2] = r * u;
		} else {
			xyz[0] = (s_unit(&s) - 0.5f) * 20.0f;
			xyz[1] = (s_unit(&s) - 0.5f) * 20.0f;
			xyz[2] = -5.0f + (s_unit(&s) - 0.5f) * 0.02f;
		}
		memcpy(p, xyz, sizeof xyz);
		if (layout == BM_CLOUD_XYZ_RGB) {
			float h = (xyz[2] + 5.0f) / 10.0f;

			p[12] = (uint8_t)(255.0f * h);
			p[13] = (uint8_t)(128 + (s_rand(&s) & 63));
			p[14] = (uint8_t)(255.0f * (1.0f - h));
		} else if (layout == BM_CLOUD_XYZ_INTENSITY) {
			float in = sqrtf(xyz[0] * xyz[0] + xyz[1] * xyz[1] + xyz[2] * xyz[2]) / 15.0f;

			memcpy(p + 12, &in, 4);
		}
	}
	*ret_cloud = self;
	return 0;
}

/* ---- writers ---- */

static int
s_write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w < 0) {
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int
s_write_cloud(const bm_cloud_t *self, int fd, const char *hdr, size_t hlen)
{
	int rc;

	if (hlen >= S_HEADER_MAX) {
		return -ENAMETOOLONG;
	}
	if ((rc = s_write_all(fd, hdr, hlen)) < 0) {
		return rc;
	}
	return s_write_all(fd, self->data, (size_t)self->count * self->stride);
}

int
bm_cloud_write_ply(const bm_cloud_t *self, int fd)
{
	char hdr[4096];
	size_t n;

	if (self == NULL || fd < 0) {
		return -EINVAL;
	}
	n = (size_t)snprintf(hdr, sizeof hdr,
	                     "ply\nformat binary_little_endian 1.0\ncomment beastmesh\n"
	                     "element vertex %llu\n",
	                     (unsigned long long)self->count);
	for (size_t i = 0; i < self->nfields && n < sizeof hdr; i++) {
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "property %s %s\n",
		                      s_types[self->fields[i].type].ply, self->fields[i].name);
	}
	if (n < sizeof hdr) {
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "end_header\n");
	}
	if (n >= sizeof hdr) {
		return -ENAMETOOLONG;
	}
	return s_write_cloud(self, fd, hdr, n);
}

int
bm_cloud_write_pcd(const bm_cloud_t *self, int fd)
{
	char hdr[4096];
	size_t n;
	const char *sect[] = {"FIELDS", "SIZE", "TYPE", "COUNT"};

	if (self == NULL || fd < 0) {
		return -EINVAL;
	}
	n = (size_t)snprintf(hdr, sizeof hdr, "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n");
	for (size_t s = 0; s < 4 && n < sizeof hdr; s++) {
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s", sect[s]);
		for (size_t i = 0; i < self->nfields && n < sizeof hdr; i++) {
			const bm_cloud_field_t *f = &self->fields[i];

			if (s == 0) {
				n += (size_t)snprintf(hdr + n, sizeof hdr - n, " %s", f->name);
			} else if (s == 1) {
				n += (size_t)snprintf(hdr + n, sizeof hdr - n, " %u", s_types[f->type].size);
			} else if (s == 2) {
				n += (size_t)snprintf(hdr + n, sizeof hdr - n, " %c", s_types[f->type].pcd);
			} else {
				n += (size_t)snprintf(hdr + n, sizeof hdr - n, " 1");
			}
		}
		if (n < sizeof hdr) {
			n += (size_t)snprintf(hdr + n, sizeof hdr - n, "\n");
		}
	}
	if (n < sizeof hdr) {
		n += (size_t)snprintf(hdr + n, sizeof hdr - n,
		                      "WIDTH %llu\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS %llu\n"
		                      "DATA binary\n",
		                      (unsigned long long)self->count, (unsigned long long)self->count);
	}
	if (n >= sizeof hdr) {
		return -ENAMETOOLONG;
	}
	return s_write_cloud(self, fd, hdr, n);
}

/* ---- readers ---- */

/* Copies the header (up to and including the line starting with `last`)
 * into a NUL-terminated buffer; returns its length in the file. */
static int
s_header(const void *buf, size_t len, const char *last, char **ret_hdr, size_t *ret_len)
{
	const char *p = buf;
	size_t max = len < S_HEADER_MAX ? len : S_HEADER_MAX, llen = strlen(last);
	size_t line = 0;
	char *h;

	for (size_t i = 0; i < max; i++) {
		if (p[i] == '\0') {
			return BM_ECORRUPT;
		}
		if (p[i] != '\n') {
			continue;
		}
		if (i - line >= llen && memcmp(p + line, last, llen) == 0) {
			h = malloc(i + 2);
			if (h == NULL) {
				return -ENOMEM;
			}
			memcpy(h, p, i + 1);
			h[i + 1] = '\0';
			*ret_hdr = h;
			*ret_len = i + 1;
			return 0;
		}
		line = i + 1;
	}
	return BM_ECORRUPT;
}

static int
s_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9') {
		return BM_ECORRUPT;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max) {
		return BM_ECORRUPT;
	}
	*ret = v;
	return 0;
}

static int
s_finish(const void *buf, size_t len, size_t hlen, uint64_t count, bm_cloud_field_t *f, size_t nf,
         bm_cloud_t **ret_cloud)
{
	bm_cloud_t *self;
	size_t stride = 0;
	int rc;

	if (nf == 0) {
		return BM_ECORRUPT;
	}
	for (size_t i = 0; i < nf; i++) {
		stride += s_types[f[i].type].size;
	}
	if (count > (len - hlen) / stride) {
		return BM_ECORRUPT; /* fewer bytes than points */
	}
	if ((rc = bm_cloud_new(count, f, nf, &self)) < 0) {
		return rc;
	}
	if (count > 0) {
		memcpy(self->data, (const uint8_t *)buf + hlen, (size_t)count * stride);
	}
	*ret_cloud = self;
	return 0;
}

static int
s_ply_type(const char *name)
{
	for (size_t t = 0; name != NULL && t < S_NTYPES; t++) {
		if (strcmp(name, s_types[t].ply) == 0 || strcmp(name, s_types[t].ply_alt) == 0) {
			return (int)t;
		}
	}
	return -1;
}

int
bm_cloud_parse_ply(const void *buf, size_t len, bm_cloud_t **ret_cloud)
{
	bm_cloud_field_t f[BM_CLOUD_MAX_FIELDS];
	size_t nf = 0, hlen;
	uint64_t count = 0;
	bool format = false, in_vertex = false, seen_vertex = false;
	char *hdr, *save = NULL, *line;
	int rc = 0;

	if (buf == NULL || ret_cloud == NULL) {
		return -EINVAL;
	}
	if (len < 4 || memcmp(buf, "ply", 3) != 0 || (((const char *)buf)[3] != '\n' &&
	                                              ((const char *)buf)[3] != '\r')) {
		return BM_ECORRUPT;
	}
	if ((rc = s_header(buf, len, "end_header", &hdr, &hlen)) < 0) {
		return rc;
	}
	for (line = strtok_r(hdr, "\n", &save); line != NULL && rc == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		char *s2 = NULL, *w0 = strtok_r(line, " \t\r", &s2);
		char *w1 = strtok_r(NULL, " \t\r", &s2), *w2 = strtok_r(NULL, " \t\r", &s2);

		if (w0 == NULL || strcmp(w0, "ply") == 0 || strcmp(w0, "comment") == 0 ||
		    strcmp(w0, "obj_info") == 0 || strcmp(w0, "end_header") == 0) {
			continue;
		}
		if (strcmp(w0, "format") == 0) {
			if (w1 == NULL) {
				rc = BM_ECORRUPT;
			} else if (strcmp(w1, "binary_little_endian") != 0) {
				rc = -ENOTSUP;
			}
			format = true;
		} else if (strcmp(w0, "element") == 0) {
			if (w1 == NULL || w2 == NULL) {
				rc = BM_ECORRUPT;
			} else if (strcmp(w1, "vertex") == 0) {
				/* Vertices must come first: skipping an element
				 * before them would mean parsing its data. */
				rc = seen_vertex ? BM_ECORRUPT : s_u64(w2, UINT64_MAX, &count);
				in_vertex = seen_vertex = true;
			} else {
				if (!seen_vertex) {
					rc = -ENOTSUP;
				}
				in_vertex = false;
			}
		} else if (strcmp(w0, "property") == 0) {
			int t = s_ply_type(w1);

			if (!in_vertex) {
				rc = seen_vertex ? 0 : BM_ECORRUPT;
			} else if (w1 != NULL && strcmp(w1, "list") == 0) {
				rc = -ENOTSUP;
			} else if (t < 0 || w2 == NULL || strlen(w2) > BM_CLOUD_FIELD_NAME_MAX ||
			           nf == BM_CLOUD_MAX_FIELDS) {
				rc = BM_ECORRUPT;
			} else {
				s_field(&f[nf++], w2, (uint32_t)t);
			}
		} else {
			rc = BM_ECORRUPT;
		}
	}
	free(hdr);
	if (rc == 0 && (!format || !seen_vertex)) {
		rc = BM_ECORRUPT;
	}
	if (rc < 0) {
		return rc;
	}
	return s_finish(buf, len, hlen, count, f, nf, ret_cloud);
}

int
bm_cloud_parse_pcd(const void *buf, size_t len, bm_cloud_t **ret_cloud)
{
	bm_cloud_field_t f[BM_CLOUD_MAX_FIELDS];
	uint32_t sizes[BM_CLOUD_MAX_FIELDS] = {0};
	char letters[BM_CLOUD_MAX_FIELDS] = {0};
	size_t nf = 0, ns = 0, nt = 0, hlen;
	uint64_t points = 0, width = 0, height = 1;
	bool have_points = false;
	char *hdr, *save = NULL, *line;
	int rc = 0;

	if (buf == NULL || ret_cloud == NULL) {
		return -EINVAL;
	}
	if ((rc = s_header(buf, len, "DATA", &hdr, &hlen)) < 0) {
		return rc;
	}
	for (line = strtok_r(hdr, "\n", &save); line != NULL && rc == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		char *s2 = NULL, *w0 = strtok_r(line, " \t\r", &s2), *w;

		if (w0 == NULL || w0[0] == '#' || strcmp(w0, "VERSION") == 0 ||
		    strcmp(w0, "VIEWPOINT") == 0) {
			continue;
		}
		if (strcmp(w0, "FIELDS") == 0) {
			while ((w = strtok_r(NULL, " \t\r", &s2)) != NULL && rc == 0) {
				if (nf == BM_CLOUD_MAX_FIELDS || strlen(w) > BM_CLOUD_FIELD_NAME_MAX) {
					rc = BM_ECORRUPT;
				} else {
					s_field(&f[nf++], w, 0);
				}
			}
		} else if (strcmp(w0, "SIZE") == 0) {
			while ((w = strtok_r(NULL, " \t\r", &s2)) != NULL && rc == 0) {
				uint64_t v;

				rc = ns == BM_CLOUD_MAX_FIELDS ? BM_ECORRUPT : s_u64(w, 8, &v);
				if (rc == 0) {
					sizes[ns++] = (uint32_t)v;
				}
			}
		} else if (strcmp(w0, "TYPE") == 0) {
			while ((w = strtok_r(NULL, " \t\r", &s2)) != NULL && rc == 0) {
				if (nt == BM_CLOUD_MAX_FIELDS || strlen(w) != 1) {
					rc = BM_ECORRUPT;
				} else {
					letters[nt++] = w[0];
				}
			}
		} else if (strcmp(w0, "COUNT") == 0) {
			while ((w = strtok_r(NULL, " \t\r", &s2)) != NULL && rc == 0) {
				if (strcmp(w, "1") != 0) {
					rc = -ENOTSUP;
				}
			}
		} else if (strcmp(w0, "WIDTH") == 0) {
			rc = s_u64(strtok_r(NULL, " \t\r", &s2), UINT32_MAX, &width);
		} else if (strcmp(w0, "HEIGHT") == 0) {
			rc = s_u64(strtok_r(NULL, " \t\r", &s2), UINT32_MAX, &height);
		} else if (strcmp(w0, "POINTS") == 0) {
			rc = s_u64(strtok_r(NULL, " \t\r", &s2), UINT64_MAX, &points);
			have_points = true;
		} else if (strcmp(w0, "DATA") == 0) {
			w = strtok_r(NULL, " \t\r", &s2);
			if (w == NULL) {
				rc = BM_ECORRUPT;
			} else if (strcmp(w, "binary") != 0) {
				rc = -ENOTSUP;
			}
		} else {
			rc = BM_ECORRUPT;
		}
	}
	free(hdr);
	if (rc == 0 && (nf == 0 || ns != nf || nt != nf)) {
		rc = BM_ECORRUPT;
	}
	for (size_t i = 0; rc == 0 && i < nf; i++) {
		int t = -1;

		for (size_t k = 0; k < S_NTYPES; k++) {
			if (s_types[k].pcd == letters[i] && s_types[k].size == sizes[i]) {
				t = (int)k;
			}
		}
		if (t < 0) {
			rc = BM_ECORRUPT;
		} else {
			f[i].type = (uint32_t)t;
		}
	}
	if (rc < 0) {
		return rc;
	}
	if (!have_points) {
		points = width * height;
	}
	return s_finish(buf, len, hlen, points, f, nf, ret_cloud);
}

int
bm_cloud_parse(const void *buf, size_t len, bm_cloud_t **ret_cloud)
{
	if (buf != NULL && len >= 3 && memcmp(buf, "ply", 3) == 0) {
		return bm_cloud_parse_ply(buf, len, ret_cloud);
	}
	return bm_cloud_parse_pcd(buf, len, ret_cloud);
}
