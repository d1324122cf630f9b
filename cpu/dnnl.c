// oneDNN convolution plans for the float32 CPU backend (see dnnl.go).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "dnnl_conv.h"
#include "dnnl_layout.h"

static dnnl_engine_t eng;
static dnnl_stream_t strm;

// The most threads a plan splits backward-weights over (splitWeights), each with its own stream.
#define MAX_PARTS 32
static dnnl_stream_t partStrm[MAX_PARTS];

// Workspace shared by all plans (calls are serialised by the backend): one buffer per
// role, grown at plan creation to the largest size any plan needs.
enum { W_SRC, W_WEI, W_DST, W_DDST_D, W_DDST_W, W_DSRC, W_DWEI, W_DBIAS, W_SCRATCH, W_WT, W_SPLIT, W_STACK, W_N };
static void *work[W_N];
static size_t workSize[W_N];

// A port binds a user buffer (plain layout) to a primitive argument (layout chosen by
// oneDNN). When the layouts differ, reorder converts between the user memory and the
// workspace memory; for outputs with accumulate, reorder is always present and adds.
// The two reorders that dominate at bf16 (NCHW f32 → NHWC bf16 in, NHWC f32 → NCHW f32 out) run as
// dnnl_layout.c's transposes where the CPU has them, with the same results (layout, n, c, hw: dnnl_layout.h;
// DDPM_DNNL_REORDER=1 keeps oneDNN's, for comparisons).
typedef struct {
	dnnl_memory_t user, prim;
	dnnl_primitive_t reorder; // NULL when the primitive uses the user memory directly
	dnnl_memory_t scratch;    // the reorder's scratchpad (user mode, in W_SCRATCH)
	int role;
	int layout, n, c, hw, acc;
	double *sums; // L_TO_NHWC_BF16: the per-sample channel sums of the user memory, for the call that sets it
} port;

static int layoutOK = -1; // ddpm_layout_available(), once; 0 also when DDPM_DNNL_REORDER=1 asks for oneDNN's

static int tagIs(const dnnl_memory_desc_t *md, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
	dnnl_memory_desc_t t;
	if (md->ndims != 4) return 0;
	if (dnnl_memory_desc_init_by_tag(&t, 4, md->dims, dt, tag) != dnnl_success) return 0;
	return dnnl_memory_desc_equal(md, &t);
}

// layoutOf picks the port's own layout change, or L_NONE for oneDNN's reorder.
static void layoutOf(port *p, const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *prim, int isOut, int acc) {
	if (layoutOK < 0) {
		const char *e = getenv("DDPM_DNNL_REORDER");
		layoutOK = ddpm_layout_available() && !(e && strcmp(e, "1") == 0);
	}
	p->layout = L_NONE;
	if (!layoutOK || !tagIs(user, dnnl_f32, dnnl_abcd)) return;
	if (!isOut && !acc && tagIs(prim, dnnl_bf16, dnnl_acdb)) p->layout = L_TO_NHWC_BF16;
	else if (isOut && tagIs(prim, dnnl_f32, dnnl_acdb)) p->layout = L_TO_NCHW_F32;
	else return;
	p->n = (int)user->dims[0];
	p->c = (int)user->dims[1];
	p->hw = (int)(user->dims[2] * user->dims[3]);
	p->acc = acc;
}

struct ddpm_conv {
	int nthr;
	char impl[3][64]; // oneDNN's implementation names of fwd, bwdd, bwdw (impl_info_str), e.g. jit_bf16:avx512_core_bf16
	dnnl_primitive_t fwd, bwdd, bwdw;
	dnnl_memory_t sfwd, sbwdd, sbwdw; // their scratchpads (user mode, in W_SCRATCH)
	port x, w, b, y;           // forward
	port dyD, wD, dx;           // backward-data (wD: weights in the bwd-data layout)
	port xW, dyW, dw, db;       // backward-weights
	// x kept as NHWC bf16 by the caller (ddpm_conv_keep) into the forward's and backward-weights' layouts: no reorder
	// where a primitive takes that layout (the AMX kernels), else oneDNN's (an exact bf16 → bf16 copy). Made where
	// both passes take bf16 (bf16 and bf16w); kept = 0 otherwise.
	port xK, xWK;
	int kept, n, keptC, hw;
	int dyShared;               // dyD and dyW reorder dy into the same layout (see held)
	// Backward-data as a forward convolution (see asForward): NULL where the plan runs oneDNN's backward-data.
	dnnl_primitive_t fwdT;
	dnnl_memory_t sfwdT;
	port wT; // the flipped, transposed weights (user layout in work[W_WT]) into fwdT's layout
	int cin, cout, k;
	// Backward-weights as one single-threaded primitive per thread on a slice of the minibatch (see splitWeights):
	// nparts = 0 where the plan runs bwdw. Part t reads images [t·n/nparts, (t+1)·n/nparts) of xW's and dyW's
	// reordered copies and writes its partial dw at work[W_SPLIT] + t·partW bytes.
	int nparts;
	dnnl_primitive_t part;
	dnnl_memory_t pSrc[MAX_PARTS], pDdst[MAX_PARTS], pDw[MAX_PARTS], pScratch[MAX_PARTS];
	size_t partSrc, partDdst, partW, partScratch; // bytes per part
	port dwP;                                      // the summed partials (in part 0's place) into the user's dw
	// The parts' images side by side (see partGeometry): stackG images a row (0: the parts read the NHWC copies as
	// they are); x's stacked copy at work[W_STACK], dy's after it (nparts · partSrc bytes in).
	int stackG, stackN, stackH, stackW, stackCin, stackCout; // stackRows' arguments: the images as the plan has them
};

// held: the plan and the user dy whose reordered copy the last call left in work[W_DDST_D] (a backward-data pass);
// the backward-weights pass of the same plan and dy reads it instead of reordering dy again, when its caller says
// that dy has not changed since (ddpm_conv_bwd_weights' dyFromData). Every other entry point forgets it.
static struct {
	const ddpm_conv *c;
	const float *dy;
} held;

static void forget(void) { held.c = NULL, held.dy = NULL; }

static int fail(char *err, int n, const char *what, dnnl_status_t st) {
	snprintf(err, n, "%s: dnnl status %d", what, (int)st);
	return -1;
}

#define CK(call, what) do { dnnl_status_t st_ = (call); if (st_ != dnnl_success) return fail(err, errn, what, st_); } while (0)

static int grow(int role, size_t sz) {
	if (sz <= workSize[role]) return 0;
	free(work[role]);
	work[role] = aligned_alloc(64, (sz + 63) & ~(size_t)63);
	if (!work[role]) { workSize[role] = 0; return -1; }
	workSize[role] = sz;
	// The stacked copies start as NaNs (bf16 0xffff): a zero column that stackRows failed to write would show in
	// the weight gradient (TestBF16WeightGradSplit) instead of reading as a lucky zero.
	if (role == W_STACK) memset(work[role], 0xff, sz);
	return 0;
}

// scratchMem creates the memory for a primitive's scratchpad (user mode: the library's
// own scratchpad is per OS thread at creation, and goroutines move between threads).
static int scratchMem(dnnl_memory_t *m, const_dnnl_primitive_desc_t pd) {
	const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (grow(W_SCRATCH, dnnl_memory_desc_get_size(md) + 64)) return -1;
	return dnnl_memory_create(m, md, eng, DNNL_MEMORY_NONE) == dnnl_success ? 0 : -1;
}

// makePort: in (user → primitive), out (primitive → user), acc (out, and add into the
// user memory with a sum post-op on the reorder).
static int makePort(port *p, const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *prim,
		int isOut, int acc, int role, char *err, int errn) {
	memset(p, 0, sizeof *p);
	p->role = -1;
	CK(dnnl_memory_create(&p->user, user, eng, DNNL_MEMORY_NONE), "memory_create user");
	if (dnnl_memory_desc_equal(user, prim) && !acc) {
		p->prim = p->user;
		return 0;
	}
	p->role = role;
	if (grow(role, dnnl_memory_desc_get_size(prim))) return fail(err, errn, "workspace alloc", dnnl_out_of_memory);
	CK(dnnl_memory_create(&p->prim, prim, eng, DNNL_MEMORY_NONE), "memory_create prim");
	dnnl_primitive_attr_t attr = NULL;
	CK(dnnl_primitive_attr_create(&attr), "attr_create");
	CK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode");
	if (acc) {
		dnnl_post_ops_t po;
		CK(dnnl_post_ops_create(&po), "post_ops_create");
		CK(dnnl_post_ops_append_sum(po, 1.0f), "append_sum");
		CK(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops");
		dnnl_post_ops_destroy(po);
	}
	dnnl_primitive_desc_t rpd;
	dnnl_status_t st = isOut ? dnnl_reorder_primitive_desc_create(&rpd, prim, eng, user, eng, attr)
	                         : dnnl_reorder_primitive_desc_create(&rpd, user, eng, prim, eng, attr);
	if (attr) dnnl_primitive_attr_destroy(attr);
	if (st != dnnl_success) return fail(err, errn, "reorder_primitive_desc_create", st);
	CK(dnnl_primitive_create(&p->reorder, rpd), "reorder primitive_create");
	if (scratchMem(&p->scratch, rpd)) return fail(err, errn, "scratchpad", dnnl_out_of_memory);
	dnnl_primitive_desc_destroy(rpd);
	layoutOf(p, user, prim, isOut, acc);
	return 0;
}

static int bind(port *p, void *ptr) {
	if (dnnl_memory_set_data_handle(p->user, ptr) != dnnl_success) return -1;
	if (p->prim != p->user && dnnl_memory_set_data_handle(p->prim, work[p->role]) != dnnl_success) return -1;
	return 0;
}

static int runReorder(port *p, int isOut) {
	if (!p->reorder) return 0;
	void *u = NULL, *w = work[p->role];
	if (p->layout != L_NONE && dnnl_memory_get_data_handle(p->user, &u) != dnnl_success) return -1;
	switch (p->layout) {
	case L_TO_NHWC_BF16: ddpm_nchw_to_nhwc_bf16(u, w, p->n, p->c, p->hw, p->sums); return 0;
	case L_TO_NCHW_F32: ddpm_nhwc_to_nchw_f32(w, u, p->n, p->c, p->hw, p->acc); return 0;
	}
	if (dnnl_memory_set_data_handle(p->scratch, work[W_SCRATCH]) != dnnl_success) return -1;
	dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, isOut ? p->prim : p->user}, {DNNL_ARG_TO, isOut ? p->user : p->prim},
		{DNNL_ARG_SCRATCHPAD, p->scratch}};
	return dnnl_primitive_execute(p->reorder, strm, 3, a) == dnnl_success ? 0 : -1;
}

int ddpm_dnnl_init(char *err, int errn) {
	if (eng) return 0;
	CK(dnnl_engine_create(&eng, dnnl_cpu, 0), "engine_create");
	CK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags), "stream_create");
	for (int i = 0; i < MAX_PARTS; i++) CK(dnnl_stream_create(&partStrm[i], eng, dnnl_stream_default_flags), "stream_create");
	return 0;
}

// asForward sets the plan up to run backward-data as a forward convolution where oneDNN has a forward kernel for it
// whose layouts are those of the backward-data primitive (c->fwdT; else it stays NULL and nothing changes). For
// stride 1, backward-data is a convolution of dy with the weights transposed (input and output channels swapped) and
// flipped in both spatial dimensions, padded by k − 1 − pad on each side:
//
//	dx[n,c,i,j] = Σ_{o,a,b} dy[n,o,i+pad−a,j+pad−b]·w[o,c,a,b] = Σ_{o,a',b'} dy[n,o,i−(k−1−pad)+a',…]·w[o,c,k−1−a',k−1−b']
//
// On AMX, oneDNN 2.6.3's forward kernel (brgconv) is ~1.5× faster than its backward-data one (jit) on the U-Net's
// layers. The operands are the same bf16 numbers (dy rounded by the same port, the weights by their reorder) and the
// products are exact, so only the order of the float32 sums differs from the backward-data primitive.
static int asForwardOff; // ddpm_conv_as_forward(0): plans created from now on keep oneDNN's backward-data (tests)

void ddpm_conv_as_forward(int on) { asForwardOff = !on; }

static void asForward(ddpm_conv *c, const dnnl_memory_desc_t *dyMd, const dnnl_memory_desc_t *dxMd, int cin, int cout,
		int k, int pad, dnnl_primitive_attr_t attr) {
	if (asForwardOff || dyMd->ndims != 4 || dxMd->ndims != 4) return;
	dnnl_dims_t wd = {cin, cout, k, k}, st = {1, 1}, p = {k - 1 - pad, k - 1 - pad};
	dnnl_memory_desc_t aw, uw;
	dnnl_memory_desc_init_by_tag(&aw, 4, wd, dnnl_bf16, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&uw, 4, wd, dnnl_f32, dnnl_abcd);
	dnnl_convolution_desc_t d;
	dnnl_primitive_desc_t pd;
	if (dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, dnnl_convolution_direct, dyMd, &aw, NULL, dxMd,
			st, p, p) != dnnl_success)
		return;
	if (dnnl_primitive_desc_create(&pd, &d, attr, eng, NULL) != dnnl_success) return;
	const char *name = NULL;
	char err[64];
	int ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name &&
		strncmp(name, "brgconv", 7) == 0 &&
		dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), dyMd) &&
		dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), dxMd) &&
		grow(W_WT, (size_t)cin * cout * k * k * sizeof(float)) == 0 &&
		makePort(&c->wT, &uw, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 0, 0, W_WEI, err,
			sizeof err) == 0 &&
		dnnl_primitive_create(&c->fwdT, pd) == dnnl_success && scratchMem(&c->sfwdT, pd) == 0;
	if (ok) {
		snprintf(c->impl[1], sizeof c->impl[1], "%s (as forward)", name);
		c->cin = cin, c->cout = cout, c->k = k;
	} else if (c->fwdT) {
		dnnl_primitive_destroy(c->fwdT);
		c->fwdT = NULL;
	}
	dnnl_primitive_desc_destroy(pd);
}

// flipT writes w [cout][cin][k][k] as wt [cin][cout][k][k] flipped in both spatial dimensions (asForward), in the
// order of wt (writes in sequence: 0.7–0.8 ms against 1.5 for a 256→256 3×3 layer in the other order, one thread),
// input channels split over the OpenMP threads. It runs once per backward-data call: most of celeba32's 14 M
// parameters, each step.
static void flipT(const float *w, float *wt, int cin, int cout, int k) {
	const int kk = k * k;
	#pragma omp parallel for schedule(static)
	for (int ci = 0; ci < cin; ci++)
		for (int o = 0; o < cout; o++) {
			const float *src = w + ((long)o * cin + ci) * kk;
			float *dst = wt + ((long)ci * cout + o) * kk;
			for (int t = 0; t < kk; t++) dst[t] = src[kk - 1 - t];
		}
}

// splitWeights sets the plan up to run its bf16 backward-weights pass as nthr single-threaded primitives, one per
// OpenMP thread, each on its slice of the minibatch, the partial weight gradients then added in slice order
// (c->nparts; else it stays 0 and the plan runs c->bwdw). Why: oneDNN 2.6.3's AMX backward-weights kernel
// (jit:avx512_core_amx_bf16) stalls when it runs on more than one thread and another process wants a core: 10–20 ms
// calls took ~520 ms each, call after call, on a 2-core machine while a compiler ran beside it (forward and the
// other kernels slowed by the load's share, no more). One thread per primitive has nothing to wait for inside it.
// Only where the copies that xW and dyW reorder into are NHWC (acdb), so that a slice of images is a contiguous
// range, where the single-threaded primitive is the same AMX kernel on the same layouts, and where OpenMP will give
// the parallel region its nthr threads (not with OMP_DYNAMIC).
// DDPM_DNNL_SPLIT=0 keeps one primitive, for comparisons.
// envOff: the environment variable is set to "0" (DDPM_DNNL_SPLIT, DDPM_DNNL_STACK: a switch off, for comparisons).
static int envOff(const char *name) {
	const char *e = getenv(name);
	return e && strcmp(e, "0") == 0;
}

static int splitOff; // ddpm_conv_split_weights(0): plans created from now on keep one primitive (tests)

void ddpm_conv_split_weights(int on) { splitOff = !on; }

// partGeometry chooses the dims {n, h, w} in which a part's primitive sees its slice of np images, and returns the
// images a stacked row holds (0: no copy). Why: the AMX backward-weights kernel reduces over output columns, a tile's
// worth at a time, so narrow images leave its tiles mostly empty. One thread of a 256→256 3×3 layer at 8×8 on 32
// images took 9–23 ms as 32 images of 8×8 and 4–5 ms as 4 rows of 8 images side by side, 8×71 (a standalone oneDNN
// program, best of 5, two runs); 384→256 and 512→256 likewise 2–3× faster. Wider images gain nothing: 16×16 as 4
// images a row (67 columns) made the celeba32 step's backward-weights 1.47–1.68 s against 0.98–1.04 s (three
// alternating runs), so images wider than 8 stay as they are.
//   - 3×3, stride 1, padding 1 on every side, images at most 8 wide: g images side by side, a zero column between
//     neighbours, the rows of each image level: dims {np/g, h, g·(w+1) − 1}. Exact: an output column of image j
//     reads columns of image j and the zero columns beside it (as the padding did), and dy is zero in the separator
//     columns, so they add nothing to the gradient; only the order of the float32 sums changes. g is the largest
//     divisor of np with rows of at most 71 columns (8 images of 8).
//   - 1×1, stride 1, no padding, images narrower than 64: the NHWC bytes themselves as rows of 64 pixels,
//     {np·h·w/64, 1, 64}, no copy (a 1×1 convolution sees pixels, not their places; 384→256 at 8×8: 5.5–6.3 ms as
//     32 images, 1.6–1.8 as rows of 64).
// DDPM_DNNL_STACK=0 keeps the images as they are, for comparisons.
static int partGeometry(int np, int h, int w, int k, const dnnl_dims_t strides, const dnnl_dims_t pl,
		const dnnl_dims_t pr, int oh, int ow, dnnl_dim_t dims[3]) {
	dims[0] = np, dims[1] = h, dims[2] = w;
	if (envOff("DDPM_DNNL_STACK") || strides[0] != 1 || strides[1] != 1) return 0;
	if (k == 1 && pl[0] == 0 && pl[1] == 0 && pr[0] == 0 && pr[1] == 0 && w < 64 && (long)np * h * w % 64 == 0) {
		dims[0] = (long)np * h * w / 64, dims[1] = 1, dims[2] = 64;
		return 0;
	}
	if (k != 3 || w > 8 || oh != h || ow != w || pl[0] != 1 || pl[1] != 1 || pr[0] != 1 || pr[1] != 1) return 0;
	int g = 72 / (w + 1); // the most images whose row fits 71 columns: g·(w+1) − 1 ≤ 71
	while (g > 1 && np % g != 0) g--;
	if (g < 2) return 0;
	dims[0] = np / g, dims[2] = g * (w + 1) - 1;
	return g;
}

// stackRows copies n NHWC bf16 images [n][h][w][c] into [n/g][h][g·(w+1) − 1][c]: g images side by side, a zero
// column between neighbours (partGeometry). Each stacked row is written by one thread, whole.
static void stackRows(const uint16_t *src, uint16_t *dst, int n, int g, int h, int w, int c) {
	const long W = (long)g * (w + 1) - 1, rows = (long)(n / g) * h;
	#pragma omp parallel for schedule(static)
	for (long r = 0; r < rows; r++) {
		const long b = r / h, i = r % h;
		uint16_t *d = dst + r * W * c;
		for (int j = 0; j < g; j++) {
			memcpy(d + (long)j * (w + 1) * c, src + (((b * g + j) * h + i) * w) * c, (size_t)w * c * sizeof *d);
			if (j < g - 1) memset(d + ((long)j * (w + 1) + w) * c, 0, (size_t)c * sizeof *d);
		}
	}
}

static void splitWeights(ddpm_conv *c, const_dnnl_primitive_desc_t wpd, int n, int cin, int h, int w, int cout, int k,
		const dnnl_dims_t strides, const dnnl_dims_t pl, const dnnl_dims_t pr, int oh, int ow, const dnnl_memory_desc_t *uw,
		dnnl_primitive_attr_t attr) {
	const int nthr = c->nthr;
	if (splitOff || envOff("DDPM_DNNL_SPLIT") || omp_get_dynamic() || nthr < 2 || nthr > MAX_PARTS || n % nthr != 0 ||
			strncmp(c->impl[2], "jit:avx512_core_amx", 19) != 0 ||
			!tagIs(dnnl_primitive_desc_query_md(wpd, dnnl_query_src_md, 0), dnnl_bf16, dnnl_acdb) ||
			!tagIs(dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_dst_md, 0), dnnl_bf16, dnnl_acdb))
		return;
	const int np = n / nthr;
	dnnl_dim_t pd3[3];
	const int g = partGeometry(np, h, w, k, strides, pl, pr, oh, ow, pd3);
	// Output dims: the same as the input's for the geometries that change them (3×3 same-padded, 1×1).
	dnnl_dims_t xd = {pd3[0], cin, pd3[1], pd3[2]}, wd = {cout, cin, k, k}, yd = {pd3[0], cout, oh, ow};
	if (pd3[2] != w) yd[2] = pd3[1], yd[3] = pd3[2];
	dnnl_memory_desc_t px, pw, py;
	dnnl_memory_desc_init_by_tag(&px, 4, xd, dnnl_bf16, dnnl_acdb);
	dnnl_memory_desc_init_by_tag(&pw, 4, wd, dnnl_f32, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&py, 4, yd, dnnl_bf16, dnnl_acdb);
	dnnl_convolution_desc_t d;
	dnnl_primitive_desc_t pd = NULL;
	omp_set_num_threads(1); // the primitive's decomposition is fixed at creation: one thread
	int ok = dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &px, &pw, NULL, &py, strides, pl,
			pr) == dnnl_success && dnnl_primitive_desc_create(&pd, &d, attr, eng, NULL) == dnnl_success;
	omp_set_num_threads(nthr);
	if (!ok) return;
	const char *name = NULL;
	char err[64];
	const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
	const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	c->partSrc = dnnl_memory_desc_get_size(&px);
	c->partDdst = dnnl_memory_desc_get_size(&py);
	c->partW = (dnnl_memory_desc_get_size(wmd) + 63) & ~(size_t)63;
	c->partScratch = (dnnl_memory_desc_get_size(smd) + 63) & ~(size_t)63;
	ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name &&
		strcmp(name, c->impl[2]) == 0 && (c->partSrc & 63) == 0 && (c->partDdst & 63) == 0 &&
		grow(W_SPLIT, (size_t)nthr * (c->partW + c->partScratch)) == 0 &&
		(!g || grow(W_STACK, (size_t)nthr * (c->partSrc + c->partDdst)) == 0) &&
		makePort(&c->dwP, uw, wmd, 1, 1, W_SPLIT, err, sizeof err) == 0 &&
		dnnl_primitive_create(&c->part, pd) == dnnl_success;
	for (int t = 0; ok && t < nthr; t++)
		ok = dnnl_memory_create(&c->pSrc[t], &px, eng, DNNL_MEMORY_NONE) == dnnl_success &&
			dnnl_memory_create(&c->pDdst[t], &py, eng, DNNL_MEMORY_NONE) == dnnl_success &&
			dnnl_memory_create(&c->pDw[t], wmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
			dnnl_memory_create(&c->pScratch[t], smd, eng, DNNL_MEMORY_NONE) == dnnl_success;
	if (ok) {
		c->nparts = nthr;
		c->stackG = g, c->stackN = n, c->stackH = h, c->stackW = w, c->stackCin = cin, c->stackCout = cout;
		if (g) snprintf(c->impl[2], sizeof c->impl[2], "%s (%d × 1 thread, %d images a row)", name, nthr, g);
		else if (pd3[2] != w) snprintf(c->impl[2], sizeof c->impl[2], "%s (%d × 1 thread, rows of %d)", name, nthr, (int)pd3[2]);
		else snprintf(c->impl[2], sizeof c->impl[2], "%s (%d × 1 thread)", name, nthr);
	}
	dnnl_primitive_desc_destroy(pd);
}

// runParts runs the split backward-weights pass (splitWeights) on the reordered x and dy in src and ddst, leaving the
// summed partial dw in work[W_SPLIT] in the part primitive's layout.
static int runParts(ddpm_conv *c, char *src, char *ddst) {
	char *base = work[W_SPLIT];
	const int np = c->nparts;
	int bad = 0;
	for (int t = 0; t < np; t++) {
		char *dw = base + (size_t)t * c->partW, *sc = base + (size_t)np * c->partW + (size_t)t * c->partScratch;
		if (dnnl_memory_set_data_handle(c->pSrc[t], src + (size_t)t * c->partSrc) != dnnl_success ||
				dnnl_memory_set_data_handle(c->pDdst[t], ddst + (size_t)t * c->partDdst) != dnnl_success ||
				dnnl_memory_set_data_handle(c->pDw[t], dw) != dnnl_success ||
				dnnl_memory_set_data_handle(c->pScratch[t], sc) != dnnl_success)
			return -1;
	}
	// One part per thread of the team (each thread takes every team-size-th part, should OpenMP give fewer threads);
	// oneDNN runs a primitive single-threaded inside a parallel region.
	#pragma omp parallel num_threads(np) reduction(|: bad)
	for (int t = omp_get_thread_num(); t < np; t += omp_get_num_threads()) {
		dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, c->pSrc[t]}, {DNNL_ARG_DIFF_DST, c->pDdst[t]},
			{DNNL_ARG_DIFF_WEIGHTS, c->pDw[t]}, {DNNL_ARG_SCRATCHPAD, c->pScratch[t]}};
		if (dnnl_primitive_execute(c->part, partStrm[t], 4, a) != dnnl_success) bad |= 1;
	}
	if (bad) return -3;
	// The partials in slice order, into part 0's: a fixed order whatever the threads' timing (each element's sum
	// runs over t in order on one thread; the elements are split over the threads).
	float *d0 = (float *)base;
	const long m = (long)(c->partW / sizeof(float));
	#pragma omp parallel for schedule(static)
	for (long i0 = 0; i0 < m; i0 += 4096) {
		const long i1 = i0 + 4096 < m ? i0 + 4096 : m;
		for (int t = 1; t < np; t++) {
			const float *dt = (const float *)(base + (size_t)t * c->partW);
			for (long i = i0; i < i1; i++) d0[i] += dt[i];
		}
	}
	return 0;
}

// pad zeros before each spatial dimension, pad + pad_end after it (ops.ConvShape).
//
// bf16 != 0: the forward and backward-data primitives take their inputs (x, w, dy) in bf16 and write y and dx in f32
// (oneDNN accumulates in f32); bf16w != 0: so does the backward-weights primitive (x, dy in bf16; dw, db in f32),
// else it runs in f32. The user buffers stay f32, and the reorders into the primitives' layouts round to bf16 (to
// nearest even).
ddpm_conv *ddpm_conv_create(int n, int cin, int h, int w, int cout, int k, int s, int pad, int pad_end, int bf16, int bf16w,
		int nthr, char *err, int errn) {
	ddpm_conv *c = calloc(1, sizeof *c);
	if (!c) { snprintf(err, errn, "calloc"); return NULL; }
	// No more threads than OpenMP will give (OMP_THREAD_LIMIT): a backward-weights primitive created for two threads
	// and run on one waited forever for the second.
	if (nthr > omp_get_thread_limit()) nthr = omp_get_thread_limit();
	c->nthr = nthr;
	forget(); // plan creation may move the workspace
	// oneDNN fixes a primitive's thread decomposition (e.g. backward-weights' split of the minibatch, whose partial
	// sums it adds up) from omp_get_max_threads() at creation: set it here as before every execution, or a primitive
	// created on a fresh OS thread (whose default is the number of cores) would sum in another order than one created
	// on a thread that already ran a convolution (GOMAXPROCS below the core count: runs differed in the last bits).
	omp_set_num_threads(nthr);
	int oh = (h + 2 * pad + pad_end - k) / s + 1, ow = (w + 2 * pad + pad_end - k) / s + 1;
	dnnl_dims_t xd = {n, cin, h, w}, wd = {cout, cin, k, k}, bd = {cout}, yd = {n, cout, oh, ow};
	dnnl_dims_t strides = {s, s}, pl = {pad, pad};
	dnnl_dims_t pr = {(oh - 1) * s + k - h - pad, (ow - 1) * s + k - w - pad};
	dnnl_memory_desc_t ux, uw, ub, uy, ax, aw, ay;
	dnnl_memory_desc_init_by_tag(&ux, 4, xd, dnnl_f32, dnnl_nchw);
	dnnl_memory_desc_init_by_tag(&uw, 4, wd, dnnl_f32, dnnl_oihw);
	dnnl_memory_desc_init_by_tag(&ub, 1, bd, dnnl_f32, dnnl_x);
	dnnl_memory_desc_init_by_tag(&uy, 4, yd, dnnl_f32, dnnl_nchw);
	dnnl_data_type_t in = bf16 ? dnnl_bf16 : dnnl_f32;
	dnnl_memory_desc_t ax32, aw32, ay16;
	dnnl_memory_desc_init_by_tag(&ax, 4, xd, in, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&aw, 4, wd, in, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&ay, 4, yd, dnnl_f32, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&ax32, 4, xd, dnnl_f32, dnnl_format_tag_any); // dx
	dnnl_memory_desc_init_by_tag(&aw32, 4, wd, dnnl_f32, dnnl_format_tag_any); // dw
	dnnl_memory_desc_init_by_tag(&ay16, 4, yd, in, dnnl_format_tag_any);       // dy
	dnnl_status_t st;
	dnnl_primitive_attr_t attr;
#define CKN(call, what) do { st = (call); if (st != dnnl_success) { fail(err, errn, what, st); return NULL; } } while (0)
#define CKP(call) do { if ((call) != 0) return NULL; } while (0)

	CKN(dnnl_primitive_attr_create(&attr), "attr_create");
	CKN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode");
	dnnl_convolution_desc_t fd, dd, wdsc;
	dnnl_primitive_desc_t fpd, dpd, wpd;
	CKN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
		&ax, &aw, &ub, &ay, strides, pl, pr), "convolution_forward_desc_init");
	CKN(dnnl_primitive_desc_create(&fpd, &fd, attr, eng, NULL), "forward primitive_desc_create");
	CKN(dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct,
		&ax32, &aw, &ay16, strides, pl, pr), "convolution_backward_data_desc_init");
	CKN(dnnl_primitive_desc_create(&dpd, &dd, attr, eng, fpd), "backward-data primitive_desc_create");
	CKN(dnnl_convolution_backward_weights_desc_init(&wdsc, dnnl_convolution_direct,
		bf16w ? &ax : &ax32, &aw32, &ub, bf16w ? &ay16 : &ay, strides, pl, pr), "convolution_backward_weights_desc_init");
	CKN(dnnl_primitive_desc_create(&wpd, &wdsc, attr, eng, fpd), "backward-weights primitive_desc_create");
	const_dnnl_primitive_desc_t pds[3] = {fpd, dpd, wpd};
	for (int i = 0; i < 3; i++) {
		const char *name = NULL;
		if (dnnl_primitive_desc_query(pds[i], dnnl_query_impl_info_str, 0, &name) != dnnl_success || !name) name = "?";
		snprintf(c->impl[i], sizeof c->impl[i], "%s", name);
	}

	// Forward: x, w (in), b (user layout), y (out).
	CKP(makePort(&c->x, &ux, dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0), 0, 0, W_SRC, err, errn));
	CKP(makePort(&c->w, &uw, dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0), 0, 0, W_WEI, err, errn));
	CKP(makePort(&c->b, &ub, dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 1), 0, 0, W_DBIAS, err, errn));
	CKP(makePort(&c->y, &uy, dnnl_primitive_desc_query_md(fpd, dnnl_query_dst_md, 0), 1, 0, W_DST, err, errn));
	// Backward-data: dy, w (in), dx (accumulate).
	CKP(makePort(&c->dyD, &uy, dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_dst_md, 0), 0, 0, W_DDST_D, err, errn));
	CKP(makePort(&c->wD, &uw, dnnl_primitive_desc_query_md(dpd, dnnl_query_weights_md, 0), 0, 0, W_WEI, err, errn));
	CKP(makePort(&c->dx, &ux, dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_src_md, 0), 1, 1, W_DSRC, err, errn));
	// Backward-weights: x, dy (in), dw, db (accumulate).
	CKP(makePort(&c->xW, &ux, dnnl_primitive_desc_query_md(wpd, dnnl_query_src_md, 0), 0, 0, W_SRC, err, errn));
	CKP(makePort(&c->dyW, &uy, dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_dst_md, 0), 0, 0, W_DDST_W, err, errn));
	CKP(makePort(&c->dw, &uw, dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 0), 1, 1, W_DWEI, err, errn));
	CKP(makePort(&c->db, &ub, dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 1), 1, 1, W_DBIAS, err, errn));

	c->n = n, c->keptC = cin, c->hw = h * w;
	if (bf16 && bf16w) {
		dnnl_memory_desc_t kx;
		dnnl_memory_desc_init_by_tag(&kx, 4, xd, dnnl_bf16, dnnl_acdb);
		CKP(makePort(&c->xK, &kx, dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0), 0, 0, W_SRC, err, errn));
		CKP(makePort(&c->xWK, &kx, dnnl_primitive_desc_query_md(wpd, dnnl_query_src_md, 0), 0, 0, W_SRC, err, errn));
		c->kept = 1;
	}

	c->dyShared = c->dyD.reorder && c->dyW.reorder && c->dyD.role == W_DDST_D &&
		dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_dst_md, 0),
			dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_dst_md, 0));

	if (bf16w)
		splitWeights(c, wpd, n, cin, h, w, cout, k, strides, pl, pr, oh, ow, &uw, attr);
	if (bf16 && s == 1 && pad_end == 0 && pad <= k - 1)
		asForward(c, dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_dst_md, 0),
			dnnl_primitive_desc_query_md(dpd, dnnl_query_diff_src_md, 0), cin, cout, k, pad, attr);

	CKN(dnnl_primitive_create(&c->fwd, fpd), "forward primitive_create");
	CKN(dnnl_primitive_create(&c->bwdd, dpd), "backward-data primitive_create");
	CKN(dnnl_primitive_create(&c->bwdw, wpd), "backward-weights primitive_create");
	if (scratchMem(&c->sfwd, fpd) || scratchMem(&c->sbwdd, dpd) || scratchMem(&c->sbwdw, wpd)) {
		snprintf(err, errn, "scratchpad alloc");
		return NULL;
	}
	dnnl_primitive_attr_destroy(attr);
	dnnl_primitive_desc_destroy(fpd);
	dnnl_primitive_desc_destroy(dpd);
	dnnl_primitive_desc_destroy(wpd);
	return c;
}

// ddpm_conv_impl is oneDNN's name of the implementation it chose for pass i (0 forward, 1 backward-data, 2
// backward-weights).
const char *ddpm_conv_impl(ddpm_conv *c, int i) { return c->impl[i]; }

// ddpm_conv_keep writes x (NCHW f32) as the plan's kept x (NHWC bf16, rounded to nearest even: the transpose of the
// L_TO_NHWC_BF16 ports, so that the passes read the same bf16 numbers as from x itself).
int ddpm_conv_keep(ddpm_conv *c, const float *x, void *kept) {
	if (!c->kept || !ddpm_layout_available()) return -5;
	omp_set_num_threads(c->nthr);
	ddpm_nchw_to_nhwc_bf16(x, kept, c->n, c->keptC, c->hw, NULL);
	return 0;
}

// The bias port of the forward pass reads the user's bias directly (layout x); a nil
// bias is a zero vector kept here. kept: x is the plan's kept x (ddpm_conv_keep), not NCHW f32.
int ddpm_conv_fwd(ddpm_conv *c, const float *x, const float *w, const float *b, float *y, int kept) {
	forget();
	if (kept && !c->kept) return -5;
	omp_set_num_threads(c->nthr);
	port *px = kept ? &c->xK : &c->x;
	if (bind(px, (void *)x) || bind(&c->w, (void *)w) || bind(&c->b, (void *)b) || bind(&c->y, y)) return -1;
	if (runReorder(px, 0) || runReorder(&c->w, 0) || runReorder(&c->b, 0)) return -2;
	if (dnnl_memory_set_data_handle(c->sfwd, work[W_SCRATCH]) != dnnl_success) return -1;
	dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, px->prim}, {DNNL_ARG_WEIGHTS, c->w.prim},
		{DNNL_ARG_BIAS, c->b.prim}, {DNNL_ARG_DST, c->y.prim}, {DNNL_ARG_SCRATCHPAD, c->sfwd}};
	if (dnnl_primitive_execute(c->fwd, strm, 5, a) != dnnl_success) return -3;
	if (runReorder(&c->y, 1)) return -4;
	return 0;
}

// ddpm_conv_dy_sums: the backward-data pass (fromData) or the backward-weights pass (not after backward-data) can
// give dy's per-sample channel sums: it changes dy to NHWC bf16 with dnnl_layout.c.
int ddpm_conv_dy_sums(ddpm_conv *c, int fromData) {
	return (fromData ? c->dyD.layout : c->dyW.layout) == L_TO_NHWC_BF16;
}

// ddpm_conv_dx_writes: backward-data can write dx instead of adding to it (its dx comes back through
// dnnl_layout.c's transpose, which does either).
int ddpm_conv_dx_writes(ddpm_conv *c) { return c->dx.layout == L_TO_NCHW_F32; }

// write: dx is written, not added to (only where ddpm_conv_dx_writes).
// sums (NULL: none): dy's per-sample channel sums, [n][cout] (ddpm_conv_dy_sums says where the pass gives them).
int ddpm_conv_bwd_data(ddpm_conv *c, const float *w, const float *dy, float *dx, int write, double *sums) {
	forget();
	if (write && !ddpm_conv_dx_writes(c)) return -5;
	omp_set_num_threads(c->nthr);
	if (bind(&c->dyD, (void *)dy) || bind(&c->dx, dx)) return -1;
	if (c->fwdT) {
		flipT(w, work[W_WT], c->cin, c->cout, c->k);
		if (bind(&c->wT, work[W_WT]) || runReorder(&c->wT, 0)) return -2;
	} else if (bind(&c->wD, (void *)w) || runReorder(&c->wD, 0)) {
		return -2;
	}
	if (sums && c->dyD.layout != L_TO_NHWC_BF16) return -5;
	c->dyD.sums = sums;
	const int rd = runReorder(&c->dyD, 0);
	c->dyD.sums = NULL;
	if (rd) return -2;
	if (c->dyShared) held.c = c, held.dy = dy;
	if (c->fwdT) {
		if (dnnl_memory_set_data_handle(c->sfwdT, work[W_SCRATCH]) != dnnl_success) return -1;
		dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, c->dyD.prim}, {DNNL_ARG_WEIGHTS, c->wT.prim},
			{DNNL_ARG_DST, c->dx.prim}, {DNNL_ARG_SCRATCHPAD, c->sfwdT}};
		if (dnnl_primitive_execute(c->fwdT, strm, 4, a) != dnnl_success) return -3;
	} else {
		if (dnnl_memory_set_data_handle(c->sbwdd, work[W_SCRATCH]) != dnnl_success) return -1;
		dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, c->dyD.prim}, {DNNL_ARG_WEIGHTS, c->wD.prim},
			{DNNL_ARG_DIFF_SRC, c->dx.prim}, {DNNL_ARG_SCRATCHPAD, c->sbwdd}};
		if (dnnl_primitive_execute(c->bwdd, strm, 4, a) != dnnl_success) return -3;
	}
	c->dx.acc = !write;
	const int rc = runReorder(&c->dx, 1);
	c->dx.acc = 1;
	if (rc) return -4;
	return 0;
}

// db may be NULL when the plan's caller has no bias gradient: then the bias gradient is
// computed into the workspace and dropped. dyFromData: the caller has not changed dy since this plan's backward-data
// pass took it (see held). kept: x is the plan's kept x (ddpm_conv_keep).
// sums: as ddpm_conv_bwd_data's, where dy is not reused.
int ddpm_conv_bwd_weights(ddpm_conv *c, const float *x, const float *dy, float *dw, float *db, int dyFromData, int kept,
		double *sums) {
	const int reuse = dyFromData && held.c == c && held.dy == dy;
	forget();
	if (kept && !c->kept) return -5;
	if (sums && (reuse || c->dyW.layout != L_TO_NHWC_BF16)) return -5;
	omp_set_num_threads(c->nthr);
	port *px = kept ? &c->xWK : &c->xW;
	if (bind(px, (void *)x) || bind(&c->dyW, (void *)dy) || bind(&c->dw, dw) || bind(&c->db, db)) return -1;
	if (reuse && dnnl_memory_set_data_handle(c->dyW.prim, work[W_DDST_D]) != dnnl_success) return -1;
	c->dyW.sums = sums;
	const int rc = runReorder(px, 0) || (!reuse && runReorder(&c->dyW, 0));
	c->dyW.sums = NULL;
	if (rc) return -2;
	if (c->nparts && !db) { // the split pass (splitWeights) has no bias gradient: only where the caller asks for none
		if (!dw) return 0;
		void *srcp = NULL; // x in the primitive's layout: the workspace, or the kept x itself
		if (dnnl_memory_get_data_handle(px->prim, &srcp) != dnnl_success) return -1;
		char *src = srcp, *ddst = reuse ? work[W_DDST_D] : work[W_DDST_W];
		if (c->stackG) {
			char *st = work[W_STACK], *sdy = st + (size_t)c->nparts * c->partSrc;
			stackRows((const uint16_t *)src, (uint16_t *)st, c->stackN, c->stackG, c->stackH, c->stackW, c->stackCin);
			stackRows((const uint16_t *)ddst, (uint16_t *)sdy, c->stackN, c->stackG, c->stackH, c->stackW, c->stackCout);
			src = st, ddst = sdy;
		}
		int rc = runParts(c, src, ddst);
		if (rc) return rc;
		if (bind(&c->dwP, dw) || runReorder(&c->dwP, 1)) return -4;
		return 0;
	}
	if (dnnl_memory_set_data_handle(c->sbwdw, work[W_SCRATCH]) != dnnl_success) return -1;
	dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, px->prim}, {DNNL_ARG_DIFF_DST, c->dyW.prim},
		{DNNL_ARG_DIFF_WEIGHTS, c->dw.prim}, {DNNL_ARG_DIFF_BIAS, c->db.prim}, {DNNL_ARG_SCRATCHPAD, c->sbwdw}};
	if (dnnl_primitive_execute(c->bwdw, strm, 5, a) != dnnl_success) return -3;
	if (dw && runReorder(&c->dw, 1)) return -4;
	if (db && runReorder(&c->db, 1)) return -5;
	return 0;
}

// A matmul plan: dst (m×n, row stride ldc, f32) = op(A)·op(B) (+ dst where acc), A m×k and B k×n given by their
// f32 user buffers' strides (transA: A is stored k×m with row stride lda, else m×k; likewise transB), rounded to
// bf16 by the ports' reorders into the layouts the primitive chose; the primitive accumulates in f32 and its sum
// post-op adds into dst (one IEEE addition per element). batch > 1: that many independent products, the user
// buffers advancing by sa, sb, sc elements per product.
struct ddpm_mm {
	int nthr;
	char impl[64];
	dnnl_primitive_t mm;
	dnnl_memory_t smm; // the primitive's scratchpad (user mode, in W_SCRATCH)
	port a, b;
	dnnl_memory_t c;   // dst: the user's buffer, used directly
};

static void strides2(dnnl_dims_t st, int batch, long sb, int trans, long ld) {
	// dims {batch, rows, cols}: trans means the matrix is stored transposed (element (r, c) at c·ld + r).
	st[0] = sb;
	st[1] = trans ? 1 : ld;
	st[2] = trans ? ld : 1;
}

ddpm_mm *ddpm_mm_create(int batch, int m, int n, int k, int transA, int lda, long sa, int transB, int ldb, long sb,
		int ldc, long sc, int acc, int nthr, char *err, int errn) {
	ddpm_mm *p = calloc(1, sizeof *p);
	if (!p) { snprintf(err, errn, "calloc"); return NULL; }
	if (nthr > omp_get_thread_limit()) nthr = omp_get_thread_limit(); // as in ddpm_conv_create
	p->nthr = nthr;
	omp_set_num_threads(nthr); // fixes the primitive's thread split (see ddpm_conv_create)
	dnnl_dims_t ad = {batch, m, k}, bd = {batch, k, n}, cd = {batch, m, n};
	dnnl_dims_t as, bs, cs;
	strides2(as, batch, sa, transA, lda);
	strides2(bs, batch, sb, transB, ldb);
	strides2(cs, batch, sc, 0, ldc);
	dnnl_memory_desc_t ua, ub, uc, pa, pb;
	dnnl_status_t st;
	CKN(dnnl_memory_desc_init_by_strides(&ua, 3, ad, dnnl_f32, as), "memory_desc A");
	CKN(dnnl_memory_desc_init_by_strides(&ub, 3, bd, dnnl_f32, bs), "memory_desc B");
	CKN(dnnl_memory_desc_init_by_strides(&uc, 3, cd, dnnl_f32, cs), "memory_desc C");
	CKN(dnnl_memory_desc_init_by_tag(&pa, 3, ad, dnnl_bf16, dnnl_abc), "memory_desc A bf16");
	CKN(dnnl_memory_desc_init_by_tag(&pb, 3, bd, dnnl_bf16, dnnl_format_tag_any), "memory_desc B bf16");
	dnnl_primitive_attr_t attr;
	CKN(dnnl_primitive_attr_create(&attr), "attr_create");
	CKN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode");
	if (acc) {
		dnnl_post_ops_t po;
		CKN(dnnl_post_ops_create(&po), "post_ops_create");
		CKN(dnnl_post_ops_append_sum(po, 1.0f), "append_sum");
		CKN(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops");
		dnnl_post_ops_destroy(po);
	}
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_t pd;
	CKN(dnnl_matmul_desc_init(&md, &pa, &pb, NULL, &uc), "matmul_desc_init");
	CKN(dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL), "matmul primitive_desc_create");
	dnnl_primitive_attr_destroy(attr);
	const char *name = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success || !name) name = "?";
	snprintf(p->impl, sizeof p->impl, "%s", name);
	CKP(makePort(&p->a, &ua, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), 0, 0, W_SRC, err, errn));
	CKP(makePort(&p->b, &ub, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 0, 0, W_WEI, err, errn));
	CKN(dnnl_memory_create(&p->c, &uc, eng, DNNL_MEMORY_NONE), "memory_create C");
	CKN(dnnl_primitive_create(&p->mm, pd), "matmul primitive_create");
	if (scratchMem(&p->smm, pd)) { snprintf(err, errn, "scratchpad alloc"); return NULL; }
	dnnl_primitive_desc_destroy(pd);
	return p;
}

const char *ddpm_mm_impl(ddpm_mm *p) { return p->impl; }

int ddpm_mm_run(ddpm_mm *p, const float *a, const float *b, float *c) {
	forget();
	omp_set_num_threads(p->nthr);
	if (bind(&p->a, (void *)a) || bind(&p->b, (void *)b) || dnnl_memory_set_data_handle(p->c, c) != dnnl_success) return -1;
	if (runReorder(&p->a, 0) || runReorder(&p->b, 0)) return -2;
	if (dnnl_memory_set_data_handle(p->smm, work[W_SCRATCH]) != dnnl_success) return -1;
	dnnl_exec_arg_t x[4] = {{DNNL_ARG_SRC, p->a.prim}, {DNNL_ARG_WEIGHTS, p->b.prim}, {DNNL_ARG_DST, p->c},
		{DNNL_ARG_SCRATCHPAD, p->smm}};
	if (dnnl_primitive_execute(p->mm, strm, 4, x) != dnnl_success) return -3;
	return 0;
}

// ddpm_layout_test runs one of the two layout changes of a port on dims {n, c, h, w}, into dst: own != 0 by
// dnnl_layout.c, else by a oneDNN reorder between the same memory descriptors (with the sum post-op where acc). For
// TestLayoutMatchesOneDNN; returns nonzero on a oneDNN error, or -9 when own is asked for without the instructions.
int ddpm_layout_test(int layout, int n, int c, int h, int w, const float *src, void *dst, int acc, int own) {
	forget();
	if (own) {
		if (!ddpm_layout_available()) return -9;
		if (layout == L_TO_NHWC_BF16) ddpm_nchw_to_nhwc_bf16(src, dst, n, c, h * w, NULL);
		else ddpm_nhwc_to_nchw_f32(src, dst, n, c, h * w, acc);
		return 0;
	}
	char e[128];
	if (ddpm_dnnl_init(e, sizeof e)) return -1;
	dnnl_dims_t d = {n, c, h, w};
	dnnl_memory_desc_t from, to;
	if (layout == L_TO_NHWC_BF16) {
		dnnl_memory_desc_init_by_tag(&from, 4, d, dnnl_f32, dnnl_abcd);
		dnnl_memory_desc_init_by_tag(&to, 4, d, dnnl_bf16, dnnl_acdb);
	} else {
		dnnl_memory_desc_init_by_tag(&from, 4, d, dnnl_f32, dnnl_acdb);
		dnnl_memory_desc_init_by_tag(&to, 4, d, dnnl_f32, dnnl_abcd);
	}
	dnnl_primitive_attr_t attr = NULL;
	if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
	if (acc) {
		dnnl_post_ops_t po;
		dnnl_post_ops_create(&po);
		dnnl_post_ops_append_sum(po, 1.0f);
		dnnl_primitive_attr_set_post_ops(attr, po);
		dnnl_post_ops_destroy(po);
	}
	dnnl_primitive_desc_t rpd;
	dnnl_primitive_t r;
	dnnl_memory_t a, b;
	int rc = -2;
	if (dnnl_reorder_primitive_desc_create(&rpd, &from, eng, &to, eng, attr) == dnnl_success) {
		if (dnnl_primitive_create(&r, rpd) == dnnl_success) {
			dnnl_memory_create(&a, &from, eng, (void *)src);
			dnnl_memory_create(&b, &to, eng, dst);
			dnnl_exec_arg_t x[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
			rc = dnnl_primitive_execute(r, strm, 2, x) == dnnl_success ? 0 : -3;
			dnnl_memory_destroy(a);
			dnnl_memory_destroy(b);
			dnnl_primitive_destroy(r);
		}
		dnnl_primitive_desc_destroy(rpd);
	}
	dnnl_primitive_attr_destroy(attr);
	return rc;
}
