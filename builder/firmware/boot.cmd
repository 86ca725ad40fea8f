# bankboot's loader A/B for U-Boot distro boot (compiled to /boot.scr on the boot FAT by `bankboot disk`).
# State on this FAT partition (docs/firmware.md):
#   /loader/good.env  "bb_good=<slot>"              the committed loader; written only by the OS (temp + rename)
#   /loader/try.env   "bb_left=<n>\nbb_try=<slot>"  a loader on trial: created by `bankctl install-loader`, rewritten
#                                                   here in place (same size) one decrement per attempt, BEFORE it
#   /loader/board.env "bb_wdt_arm=<commands>"       optional: arms the board's hardware watchdog before any kernel
# Missing or unreadable state means: boot the good slot (a when good.env is unreadable). Each slot directory holds
# vmlinuz, initrd.img, cmdline.env ("bb_args=...") and vmlinuz.crc32 / initrd.img.crc32 (the CRC-32 big-endian,
# then little-endian: builds with CONFIG_HASH store the result big-endian, builds without it in CPU order).
# A slot whose files fail to load or verify falls back to the good slot in the same boot.
setenv bb_part "${devtype} ${devnum}:${distro_bootpart}"
setexpr bb_tmp ${scriptaddr} + 0x100000
setenv bb_good a
setenv bb_try
setenv bb_left 0
setenv bb_trial
if load ${bb_part} ${bb_tmp} /loader/good.env; then env import -t ${bb_tmp} ${filesize} bb_good; fi
if test "${bb_good}" != a && test "${bb_good}" != b; then setenv bb_good a; fi
if load ${bb_part} ${bb_tmp} /loader/try.env; then env import -t ${bb_tmp} ${filesize} bb_try bb_left; fi
setenv bb_wdt_arm
if load ${bb_part} ${bb_tmp} /loader/board.env; then env import -t ${bb_tmp} ${filesize} bb_wdt_arm; fi
setenv bb_slot ${bb_good}
if test -n "${bb_try}" && test "${bb_try}" != "${bb_good}" && test "${bb_left}" -gt 0; then
  setexpr bb_left ${bb_left} - 1
  env export -t ${bb_tmp} bb_left bb_try
  if fatwrite ${bb_part} ${bb_tmp} /loader/try.env ${filesize}; then
    setenv bb_slot ${bb_try}
    setenv bb_trial bankboot.loader_trial
    echo "bankboot: trying loader ${bb_try}, ${bb_left} tries left after this one"
  else
    echo "bankboot: cannot record the try; booting the good loader ${bb_good}"
  fi
fi
setenv bb_verify 'setexpr bb_sum ${bb_addr} + ${filesize}; setexpr bb_sum ${bb_sum} + 0x100; setexpr bb_sum ${bb_sum} / 0x100; setexpr bb_sum ${bb_sum} * 0x100; setexpr bb_exp ${bb_sum} + 0x10; setexpr bb_exp2 ${bb_sum} + 0x14; crc32 ${bb_addr} ${filesize} ${bb_sum} && load ${bb_part} ${bb_exp} /${bb_slot}/${bb_file}.crc32 && run bb_cmp'
setenv bb_cmp 'cmp.b ${bb_sum} ${bb_exp} 4 || cmp.b ${bb_sum} ${bb_exp2} 4'
setenv bb_load 'load ${bb_part} ${bb_addr} /${bb_slot}/${bb_file} && setenv bb_size ${filesize} && run bb_verify'
setenv bb_boot_slot 'echo "bankboot: loading loader ${bb_slot}"; setenv bb_args; if load ${bb_part} ${bb_tmp} /${bb_slot}/cmdline.env; then env import -t ${bb_tmp} ${filesize} bb_args; fi; setenv bb_addr ${kernel_addr_r}; setenv bb_file vmlinuz; if run bb_load; then setenv bb_addr ${ramdisk_addr_r}; setenv bb_file initrd.img; if run bb_load; then setenv bootargs "${bb_args} bankboot.loader_slot=${bb_slot} ${bb_trial}"; if test "${cpu}" = armv8; then booti ${kernel_addr_r} ${ramdisk_addr_r}:${bb_size} ${fdt_addr}; else bootz ${kernel_addr_r} ${ramdisk_addr_r}:${bb_size} ${fdt_addr}; fi; fi; fi; echo "bankboot: loader ${bb_slot}: ${bb_file} failed to load, verify or start"'
# the watchdog only for a loader on trial: a committed loader is never reset by it
if test -n "${bb_trial}" && test -n "${bb_wdt_arm}"; then run bb_wdt_arm; fi
run bb_boot_slot
if test "${bb_slot}" != "${bb_good}"; then setenv bb_slot ${bb_good}; setenv bb_trial; run bb_boot_slot; fi
if test "${bb_slot}" != a; then setenv bb_slot a; setenv bb_trial; run bb_boot_slot; fi
echo "bankboot: no loader could be started; resetting in 5 s"
sleep 5
reset
