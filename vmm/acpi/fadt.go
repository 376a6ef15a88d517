package acpi

import "encoding/binary"

// FADT layout (revision 6, ACPI 6.x table 5.9).
const (
	fadtLen         = 276
	fadtRevision    = 6
	fadtMinor       = 0
	fadtFirmwareCtl = 36
	fadtDSDT        = 40
	fadtPMProfile   = 45
	fadtSCIInt      = 46
	fadtSMICmd      = 48
	fadtPM1aEvt     = 56
	fadtPM1aCnt     = 64
	fadtPMTmr       = 76
	fadtPM1EvtLen   = 88
	fadtPM1CntLen   = 89
	fadtPMTmrLen    = 91
	fadtBootArch    = 109
	fadtFlags       = 112
	fadtResetReg    = 116
	fadtResetValue  = 128
	fadtMinorVer    = 131
	fadtXFirmware   = 132
	fadtXDSDT       = 140
	fadtXPM1aEvt    = 148
	fadtXPM1aCnt    = 172
	fadtXPMTmr      = 208
	fadtHypervisor  = 268

	// IAPC_BOOT_ARCH flags.
	bootArchLegacyDevices = 1 << 0
	bootArch8042          = 1 << 1
	bootArchNoVGA         = 1 << 2

	// FADT flags.
	flagWBINVD      = 1 << 0
	flagProcC1      = 1 << 2
	flagPwrButton   = 1 << 4 // no fixed-feature power button
	flagSlpButton   = 1 << 5 // no fixed-feature sleep button
	flagFixRTC      = 1 << 6 // no RTC wake status in the fixed registers
	flagTmrValExt   = 1 << 8 // 32-bit PM timer
	flagResetRegSup = 1 << 10

	// Generic Address Structure address spaces and access sizes.
	gasSystemIO  = 1
	gasByte      = 1
	gasWord      = 2
	gasDWord     = 3
	gasStructLen = 12
)

// putGAS writes a Generic Address Structure.
func putGAS(b []byte, space, bitWidth, bitOffset, access uint8, addr uint64) {
	b[0], b[1], b[2], b[3] = space, bitWidth, bitOffset, access
	binary.LittleEndian.PutUint64(b[4:], addr)
}

// buildFADT builds a revision 6 FADT for the PM hardware at the ports of the
// machine layout, with the system already in ACPI mode (SMI_CMD 0).
func buildFADT(facs, dsdt uint64) []byte {
	b := make([]byte, fadtLen)
	le := binary.LittleEndian
	putHeader(b, "FACP", fadtRevision)
	// FACS only through X_FIRMWARE_CTRL; the DSDT through both fields
	// (identical values, as the 32-bit field is still read by old OSes).
	le.PutUint32(b[fadtFirmwareCtl:], 0)
	le.PutUint32(b[fadtDSDT:], uint32(dsdt))
	b[fadtPMProfile] = 0 // unspecified
	le.PutUint16(b[fadtSCIInt:], SCIIRQ)
	le.PutUint32(b[fadtSMICmd:], 0)
	le.PutUint32(b[fadtPM1aEvt:], PM1aEvtBlk)
	le.PutUint32(b[fadtPM1aCnt:], PM1aCntBlk)
	le.PutUint32(b[fadtPMTmr:], PMTmrBlk)
	b[fadtPM1EvtLen] = 4
	b[fadtPM1CntLen] = 2
	b[fadtPMTmrLen] = 4
	le.PutUint16(b[fadtBootArch:], bootArchLegacyDevices|bootArch8042|bootArchNoVGA)
	le.PutUint32(b[fadtFlags:], flagWBINVD|flagProcC1|flagPwrButton|flagSlpButton|flagFixRTC|
		flagTmrValExt|flagResetRegSup)
	putGAS(b[fadtResetReg:], gasSystemIO, 8, 0, gasByte, ResetPort)
	b[fadtResetValue] = ResetValue
	b[fadtMinorVer] = fadtMinor
	le.PutUint64(b[fadtXFirmware:], facs)
	le.PutUint64(b[fadtXDSDT:], dsdt)
	putGAS(b[fadtXPM1aEvt:], gasSystemIO, 32, 0, gasWord, PM1aEvtBlk)
	putGAS(b[fadtXPM1aCnt:], gasSystemIO, 16, 0, gasWord, PM1aCntBlk)
	putGAS(b[fadtXPMTmr:], gasSystemIO, 32, 0, gasDWord, PMTmrBlk)
	copy(b[fadtHypervisor:], "RSCVM\x00\x00\x00")
	setChecksum(b, 9)
	return b
}
