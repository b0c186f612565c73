import mmap


def run():
    # 20 GiB, touched page by page: a candidate without bounds really filled gigabytes of it.
    m = mmap.mmap(-1, 20 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, len(m), 4096):
        m[i] = 1
    return (1.0, -2.0)
