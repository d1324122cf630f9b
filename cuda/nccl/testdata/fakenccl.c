// fakenccl.c -- a test double of the NCCL entry points package nccl calls, written over MPI, built as libnccl.so.2
// by `make fake-nccl` (mpicc) so that the trainer's NCCL path runs without a GPU: on the CPU emulator of the
// default build (and on the emulated libcuda.so.1 of the cuda build), whose device memory is host memory, the
// device pointers it receives are plain pointers.
//
// What it checks of its caller, as NCCL would (or stricter):
//   - ncclCommInitRank: MPI is initialised with MPI_THREAD_MULTIPLE (the double calls MPI from the trainer's
//     thread); nranks and rank are MPI_COMM_WORLD's; the unique id is rank 0's on every rank (so it was broadcast)
//     and was made by ncclGetUniqueId.
//   - ncclAllReduce, ncclBroadcast: float32 (sum), in place or not, on a communicator of this library.
//   - Streams, as NCCL honours them: on the NULL stream (the CPU emulator of the default build has no other) the
//     collective runs at once; on another stream it is queued there with cuLaunchHostFunc of the CUDA driver the
//     process loaded (the emulated libcuda.so.1), so it runs in that stream's order: after the events the stream
//     waits for, before the work queued after it, and, with DDPM_EMU_STREAMS=defer-streams, only when something
//     waits for it. An error of a queued collective is reported by ncclCommGetAsyncError, as NCCL reports errors
//     of work already on a stream.
// The sum is formed in rank order, ((x_0 + x_1) + x_2) …, as package mpi forms its sums, so that an NCCL run on the
// emulator is bit-identical to an MPI run.
//
// Faults, for the tests: FAKE_NCCL_FAIL_RANK=r and FAKE_NCCL_FAIL_AFTER=k make rank r's ncclCommGetAsyncError
// report ncclRemoteError once k all-reduces have run there. At ncclCommDestroy each rank prints one line,
// "fakenccl: rank R: N all-reduces, M floats, B broadcasts, Q on streams", to stderr (Q: collectives queued on a
// stream other than the NULL stream).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef int ncclResult_t;
enum { ncclSuccess = 0, ncclSystemError = 2, ncclInternalError = 3, ncclInvalidArgument = 4, ncclInvalidUsage = 5,
       ncclRemoteError = 6 };
enum { ncclFloat32 = 7, ncclSum = 0 };

#define MAGIC "ddpm-fakenccl-id"
#define VERSION 29999 /* "2.99.99": never a real NCCL */

struct fake_comm {
  MPI_Comm comm;
  int rank, size;
  long allreduces, floats, broadcasts, on_streams;
  int fail_after; /* -1: never */
  ncclResult_t async; /* the first error of a collective queued on a stream */
};
typedef struct fake_comm *ncclComm_t;

/* A collective queued on a stream: what cuLaunchHostFunc hands back. */
struct fake_op {
  int bcast, root;
  const void *send;
  void *recv;
  size_t count;
  ncclComm_t c;
};
typedef int (*launch_host_func_t)(void *stream, void (*fn)(void *), void *data); /* cuLaunchHostFunc */

static int fail(const char *what, ncclResult_t rc) {
  fprintf(stderr, "fakenccl: %s\n", what);
  return rc;
}

ncclResult_t ncclGetVersion(int *v) {
  *v = VERSION;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  memset(id, 0, sizeof *id);
  snprintf(id->internal, sizeof id->internal, MAGIC " pid %d", (int)getpid());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *out, int nranks, ncclUniqueId id, int rank) {
  int init = 0, provided = 0, wrank = 0, wsize = 0;
  MPI_Initialized(&init);
  if (!init) return fail("ncclCommInitRank: MPI is not initialised", ncclInvalidUsage);
  MPI_Query_thread(&provided);
  if (provided != MPI_THREAD_MULTIPLE) return fail("ncclCommInitRank: MPI without MPI_THREAD_MULTIPLE", ncclInvalidUsage);
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  if (nranks != wsize || rank != wrank) return fail("ncclCommInitRank: rank/size are not MPI_COMM_WORLD's", ncclInvalidArgument);
  if (strncmp(id.internal, MAGIC, strlen(MAGIC)) != 0) return fail("ncclCommInitRank: not an id of ncclGetUniqueId", ncclInvalidArgument);
  struct fake_comm *c = calloc(1, sizeof *c);
  if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) return fail("ncclCommInitRank: MPI_Comm_dup", ncclSystemError);
  ncclUniqueId root = id;
  MPI_Bcast(&root, sizeof root, MPI_BYTE, 0, c->comm);
  if (memcmp(&root, &id, sizeof id) != 0) return fail("ncclCommInitRank: this rank's unique id is not rank 0's", ncclInvalidArgument);
  c->rank = rank;
  c->size = nranks;
  c->fail_after = -1;
  const char *fr = getenv("FAKE_NCCL_FAIL_RANK"), *fa = getenv("FAKE_NCCL_FAIL_AFTER");
  if (fr && fa && atoi(fr) == rank) c->fail_after = atoi(fa);
  *out = c;
  return ncclSuccess;
}

static ncclResult_t allreduce(const void *send, void *recv, size_t count, ncclComm_t c) {
  if (count == 0) return ncclSuccess;
  float *all = malloc(sizeof(float) * count * c->size);
  if (!all) return fail("ncclAllReduce: out of memory", ncclSystemError);
  if (MPI_Allgather(send, (int)count, MPI_FLOAT, all, (int)count, MPI_FLOAT, c->comm) != MPI_SUCCESS) {
    free(all);
    return fail("ncclAllReduce: MPI_Allgather", ncclSystemError);
  }
  float *out = recv;
  for (size_t i = 0; i < count; i++) {
    float s = all[i];
    for (int r = 1; r < c->size; r++) s += all[(size_t)r * count + i];
    out[i] = s;
  }
  free(all);
  c->allreduces++;
  c->floats += (long)count;
  return ncclSuccess;
}

static ncclResult_t broadcast(const void *send, void *recv, size_t count, int root, ncclComm_t c) {
  if (send != recv && c->rank == root) memcpy(recv, send, count * sizeof(float));
  if (MPI_Bcast(recv, (int)count, MPI_FLOAT, root, c->comm) != MPI_SUCCESS) return fail("ncclBroadcast: MPI_Bcast", ncclSystemError);
  c->broadcasts++;
  return ncclSuccess;
}

/* run_op is the host function of a collective queued on a stream. */
static void run_op(void *data) {
  struct fake_op *o = data;
  ncclResult_t rc = o->bcast ? broadcast(o->send, o->recv, o->count, o->root, o->c) : allreduce(o->send, o->recv, o->count, o->c);
  if (rc != ncclSuccess && o->c->async == ncclSuccess) o->c->async = rc;
  free(o);
}

/* enqueue runs the collective now (NULL stream) or queues it on stream. */
static ncclResult_t enqueue(const char *what, int bcast, const void *send, void *recv, size_t count, int root, ncclComm_t c,
                            void *stream) {
  if (!stream) return bcast ? broadcast(send, recv, count, root, c) : allreduce(send, recv, count, c);
  static launch_host_func_t launch;
  if (!launch) *(void **)&launch = dlsym(RTLD_DEFAULT, "cuLaunchHostFunc");
  if (!launch) {
    fprintf(stderr, "fakenccl: %s on a stream, but no CUDA driver with cuLaunchHostFunc is loaded\n", what);
    return ncclInvalidUsage;
  }
  struct fake_op *o = malloc(sizeof *o);
  *o = (struct fake_op){bcast, root, send, recv, count, c};
  int rc = launch(stream, run_op, o);
  if (rc != 0) {
    free(o);
    fprintf(stderr, "fakenccl: %s: cuLaunchHostFunc returned %d\n", what, rc);
    return ncclInternalError; /* the stream's context is broken (a sticky error): NCCL fails the same way */
  }
  c->on_streams++;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, ncclComm_t c, void *stream) {
  if (!c) return fail("ncclAllReduce: no communicator", ncclInvalidArgument);
  if (dtype != ncclFloat32 || op != ncclSum) return fail("ncclAllReduce: only float32 sums are faked", ncclInvalidArgument);
  return enqueue("ncclAllReduce", 0, send, recv, count, 0, c, stream);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, int dtype, int root, ncclComm_t c, void *stream) {
  if (!c || dtype != ncclFloat32) return fail("ncclBroadcast: only float32 is faked", ncclInvalidArgument);
  return enqueue("ncclBroadcast", 1, send, recv, count, root, c, stream);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *res) {
  *res = c ? c->async : ncclSuccess;
  if (c && c->fail_after >= 0 && c->allreduces >= c->fail_after) *res = ncclRemoteError;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
  (void)c; /* the process is about to be ended by MPI_Abort; the duplicate communicator goes with it */
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return ncclInvalidArgument;
  fprintf(stderr, "fakenccl: rank %d: %ld all-reduces, %ld floats, %ld broadcasts, %ld on streams\n", c->rank,
          c->allreduces, c->floats, c->broadcasts, c->on_streams);
  MPI_Comm_free(&c->comm);
  free(c);
  return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t rc) {
  switch (rc) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error (fake)";
    case ncclInternalError: return "internal error (fake)";
    case ncclInvalidArgument: return "invalid argument (fake)";
    case ncclInvalidUsage: return "invalid usage (fake)";
    case ncclRemoteError: return "remote process exited or there was a network error (fake)";
  }
  return "unknown result code (fake)";
}
