/* A stand-in for the CUDA runtime and driver calls quiver's CUDA shared
 * memory makes, over POSIX shared memory, for the tests on machines without
 * a GPU: it checks quiver's loading of the libraries, the calls' signatures
 * (the 64-byte handle passed by value), the endpoints and the data path as
 * tritonclient drives them. It is no test of CUDA itself: that is
 * scripts/gpu-check.sh's, on a GPU.
 *
 * "Device memory" is a POSIX shared memory object; its handle is the 8 bytes
 * "QVFAKECU" then the object's name, NUL-padded to 64 bytes. One device. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct { char reserved[64]; } cudaIpcMemHandle_t;

#define SLOTS 256
static struct { void *base; size_t size; } opened[SLOTS];

int cudaGetDeviceCount(int *count) { *count = 1; return 0; }

int cudaSetDevice(int device) { return device == 0 ? 0 : 101; /* cudaErrorInvalidDevice */ }

int cudaIpcOpenMemHandle(void **pointer, cudaIpcMemHandle_t handle, unsigned int flags) {
    (void)flags;
    char name[57];
    if (memcmp(handle.reserved, "QVFAKECU", 8) != 0) return 400; /* cudaErrorInvalidResourceHandle */
    memcpy(name, handle.reserved + 8, 56);
    name[56] = 0;
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) return 400;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) { close(fd); return 400; }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return 2; /* cudaErrorMemoryAllocation */
    for (int i = 0; i < SLOTS; i++) {
        if (opened[i].base == NULL) {
            opened[i].base = base;
            opened[i].size = (size_t)st.st_size;
            *pointer = base;
            return 0;
        }
    }
    munmap(base, (size_t)st.st_size);
    return 2;
}

int cudaIpcCloseMemHandle(void *pointer) {
    for (int i = 0; i < SLOTS; i++) {
        if (opened[i].base == pointer) {
            munmap(pointer, opened[i].size);
            opened[i].base = NULL;
            return 0;
        }
    }
    return 1; /* cudaErrorInvalidValue */
}

int cudaMemcpy(void *to, const void *from, size_t n, int kind) {
    (void)kind;
    memcpy(to, from, n);
    return 0;
}

const char *cudaGetErrorString(int code) {
    switch (code) {
    case 0: return "no error";
    case 101: return "invalid device ordinal";
    case 400: return "invalid resource handle";
    default: return "unknown error";
    }
}

/* The driver's, with CUdeviceptr as a 64-bit integer. */
int cuMemGetAddressRange_v2(uint64_t *base, size_t *size, uint64_t pointer) {
    for (int i = 0; i < SLOTS; i++) {
        uint64_t b = (uint64_t)(uintptr_t)opened[i].base;
        if (opened[i].base != NULL && pointer >= b && pointer < b + opened[i].size) {
            *base = b;
            *size = opened[i].size;
            return 0;
        }
    }
    return 1;
}
