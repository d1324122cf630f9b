// oneDNN convolution plans for the float32 CPU backend (see dnnl.go).
typedef struct ddpm_conv ddpm_conv;
int ddpm_dnnl_init(char *err, int errn);
ddpm_conv *ddpm_conv_create(int n, int cin, int h, int w, int cout, int k, int s, int pad, int pad_end, int bf16, int bf16w, int nthr, char *err, int errn);
int ddpm_conv_fwd(ddpm_conv *c, const float *x, const float *w, const float *b, float *y, int kept);
int ddpm_conv_keep(ddpm_conv *c, const float *x, void *kept);
int ddpm_conv_bwd_data(ddpm_conv *c, const float *w, const float *dy, float *dx, int write, double *sums);
int ddpm_conv_dy_sums(ddpm_conv *c, int fromData);
int ddpm_conv_dx_writes(ddpm_conv *c);
int ddpm_conv_bwd_weights(ddpm_conv *c, const float *x, const float *dy, float *dw, float *db, int dyFromData, int kept, double *sums);
const char *ddpm_conv_impl(ddpm_conv *c, int i);
typedef struct ddpm_mm ddpm_mm;
ddpm_mm *ddpm_mm_create(int batch, int m, int n, int k, int transA, int lda, long sa, int transB, int ldb, long sb, int ldc, long sc, int acc, int nthr, char *err, int errn);
int ddpm_mm_run(ddpm_mm *p, const float *a, const float *b, float *c);
const char *ddpm_mm_impl(ddpm_mm *p);
int ddpm_layout_test(int layout, int n, int c, int h, int w, const float *src, void *dst, int acc, int own);
void ddpm_conv_as_forward(int on);
void ddpm_conv_split_weights(int on);
