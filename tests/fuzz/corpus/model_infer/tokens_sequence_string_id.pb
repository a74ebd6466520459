
mseed"
sequence_end"
sequence_id17*
tokensINT64*