"""The lab: what boots, measures and breaks bankboot on the build host, and is not shipped to a device or
needed to build for one. QEMU boots of a board, the sample rootfs, the benchmarks, the never-brick campaign
and the soak, the fleet and hawkBit labs with the servers they start on loopback (nginx, goosebit,
SeaweedFS). The product (images, initramfs, disks, keys, inspect, publish, delta) imports nothing from here but
through the command line's lab commands (tests/unit/test_rooms.py); `rig.py` is the lab's device, shared by
the campaign, the soak and the VM tests."""
