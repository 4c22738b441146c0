// AttentionPlugin.h - TensorRT plugin "MVT_Attention" (version "1", namespace "mobilevit_trt"), contract in
// mobilevit_trt/plugin_spec.py: one packed qkv [..., N, 3*H*D] or three q, k, v [..., N, H*D] (FP32 or FP16, all
// the same type, rank >= 3); output [..., N, H*D]; fields scale (FLOAT32), num_heads (INT32, default 1).
// The plumbing common to all plugins is in PluginBase / PluginCreatorBase.
#ifndef MVT_ATTENTION_PLUGIN_H
#define MVT_ATTENTION_PLUGIN_H

#include "mvtPluginCommon.h"

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

class AttentionPlugin final : public PluginBase<AttentionPlugin>
{
public:
    static PluginInfo const& info() noexcept;
    static AttentionPlugin* fromFields(char const* where, nvinfer1::PluginFieldCollection const* fc);

    AttentionPlugin(float scale, int32_t numHeads);
    // From serialize(); throws std::invalid_argument on a malformed buffer.
    AttentionPlugin(void const* data, size_t length);

    size_t getSerializationSize() const noexcept override;
    void serialize(void* buffer) const noexcept override;
    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;

    // For PluginBase (supportsFormatCombination, configurePlugin, enqueue).
    static bool supportsType(int32_t pos, nvinfer1::PluginTensorDesc const* inOut) noexcept;
    std::string checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs) const;
    int32_t launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, cudaStream_t stream) const;

private:
    float mScale;
    int32_t mNumHeads;
};

class AttentionPluginCreator final : public PluginCreatorBase<AttentionPlugin>
{
public:
    AttentionPluginCreator();
};

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP

#endif // MVT_ATTENTION_PLUGIN_H
