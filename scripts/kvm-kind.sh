#!/bin/sh
# Say what /dev/kvm is here: hardware VMX/SVM, PVM (cannot run unmodified Linux), or none.
if [ ! -e /dev/kvm ]; then
    echo "none (no /dev/kvm)"
elif [ -d /sys/module/kvm_pvm ]; then
    echo "PVM (kvm_pvm: real Linux guests run inside the test host)"
elif grep -qw vmx /proc/cpuinfo; then
    echo "hardware VMX (Intel)"
elif grep -qw svm /proc/cpuinfo; then
    echo "hardware SVM (AMD)"
else
    echo "unknown (/dev/kvm present, no vmx/svm flag)"
fi
