"""WeSpeaker's ResNet34 speaker embedding (a speaker-embedding network, not an ASR family), the one
pyannote.audio 3.x diarizes with (`pyannote/wespeaker-voxceleb-resnet34-LM`): Kaldi fbank with
per-window mean normalisation -> ResNet34 of basic blocks over (frequency, time) -> mean and
standard deviation over time -> linear embedding, on backend ops. Its weights are the user's copy
of pyannote's `pytorch_model.bin` (or WeSpeaker's own `avg_model.pt`). Public surface:
`polyasr.diarize(..., options=DiarizeOptions(embedding="wespeaker-resnet34"))`."""
