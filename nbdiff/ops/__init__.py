"""Every op and NumPy-named function, gathered from the op family modules.

Each family module lists its public functions in ``__all__``; adding an op touches only its family module.
"""

from nbdiff.ops.broadcast import *  # noqa: F401,F403
from nbdiff.ops.broadcast import __all__ as _broadcast_all
from nbdiff.ops.elemwise import *  # noqa: F401,F403
from nbdiff.ops.elemwise import __all__ as _elemwise_all
from nbdiff.ops.indexing import *  # noqa: F401,F403
from nbdiff.ops.indexing import __all__ as _indexing_all
from nbdiff.ops.linalg import *  # noqa: F401,F403
from nbdiff.ops.linalg import __all__ as _linalg_all
from nbdiff.ops.nnet import *  # noqa: F401,F403
from nbdiff.ops.nnet import __all__ as _nnet_all
from nbdiff.ops.reduce import *  # noqa: F401,F403
from nbdiff.ops.reduce import __all__ as _reduce_all
from nbdiff.ops.shape import *  # noqa: F401,F403
from nbdiff.ops.shape import __all__ as _shape_all
from nbdiff.ops.sizes import *  # noqa: F401,F403
from nbdiff.ops.sizes import __all__ as _sizes_all

__all__ = [
    *_broadcast_all,
    *_elemwise_all,
    *_indexing_all,
    *_linalg_all,
    *_nnet_all,
    *_reduce_all,
    *_shape_all,
    *_sizes_all,
]
